package mesh

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/strata-fl/strata/identity"
)

// Authorization builds the NATS server's users from the mesh's identities:
// each may publish and subscribe only where its role needs to.
//
//	client C of region R  publishes its own updates (update.R.C) and secure
//	                      aggregation messages (secagg.R.C) and reads only its
//	                      own round invitations (invite.R.C: no client learns
//	                      another's sampling decision), its own secagg messages
//	                      (secagg_to.R.C), the end of the job and the model
//	                      bucket (read-only JetStream calls)
//	region R              reads R's rounds, pings, updates and secagg
//	                      messages; publishes only its own partials, registry
//	                      requests and secagg messages to its own clients
//	                      (secagg_to.R.*); replies to the requests it receives
//	global node, operator everything (they run the job and its store)
//	leaf node of site R   what crosses R's link to the hub (LeafPermissions)
//
// Everything else is denied: a client cannot publish as another client or to
// another region, cannot read updates, and cannot publish partials, rounds
// or models.
func Authorization(job string, ids []identity.Entry) ([]*server.NkeyUser, error) {
	out := make([]*server.NkeyUser, 0, len(ids))
	clients := map[string][]string{}
	var requesters []string // who sends requests a site's region answers
	for _, e := range ids {
		switch e.Kind {
		case identity.KindClient:
			clients[e.Region] = append(clients[e.Region], e.ID)
		case identity.KindGlobal, identity.KindOperator:
			requesters = append(requesters, InboxPrefix(e.Kind, e.ID))
		}
	}
	for _, e := range ids {
		if e.Kind == identity.KindLeaf {
			p, err := LeafPermissions(job, e.Region, clients[e.Region], requesters)
			if err != nil {
				return nil, err
			}
			// A leaf key opens leaf connections only, and no other key
			// does: a client's key cannot bridge a site to the hub.
			out = append(out, &server.NkeyUser{Nkey: e.Public, Permissions: p, AllowedConnectionTypes: connTypes(connLeaf)})
			continue
		}
		p, err := Permissions(job, e)
		if err != nil {
			return nil, err
		}
		out = append(out, &server.NkeyUser{Nkey: e.Public, Permissions: p, AllowedConnectionTypes: connTypes(connStandard, connInProcess)})
	}
	return out, nil
}

// Permissions returns one identity's subject permissions.
func Permissions(job string, e identity.Entry) (*server.Permissions, error) {
	base, err := join(job, "", "")
	if err != nil {
		return nil, err
	}
	base = strings.TrimSuffix(base, ".")
	inbox := InboxPrefix(e.Kind, e.ID) + ".>"
	switch e.Kind {
	case identity.KindGlobal, identity.KindOperator:
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: []string{">"}},
		}, nil
	case identity.KindRegion:
		r := e.ID
		return &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{
				base + ".partial." + r, base + ".registry." + r, base + ".secagg_to." + r + ".*",
			}},
			Subscribe: &server.SubjectPermission{Allow: []string{
				base + ".round." + r, base + ".ping." + r, base + ".update." + r + ".*", base + ".secagg." + r + ".*", base + ".done", inbox,
			}},
			Response: &server.ResponsePermission{MaxMsgs: 1, Expires: 10 * time.Minute},
		}, nil
	case identity.KindClient:
		if err := validClientID(e.ID); err != nil {
			return nil, err
		}
		// A client behind a site's leaf node reaches the hub's store
		// through the hub's JetStream domain.
		pub := append([]string{base + ".update." + e.Region + "." + e.ID, base + ".secagg." + e.Region + "." + e.ID},
			modelReads(job, "$JS.API")...)
		return &server.Permissions{
			Publish: &server.SubjectPermission{Allow: append(pub, modelReads(job, "$JS."+HubDomain+".API")[:8]...)},
			Subscribe: &server.SubjectPermission{Allow: []string{
				base + ".invite." + e.Region + "." + e.ID, base + ".secagg_to." + e.Region + "." + e.ID, base + ".done", inbox,
			}},
		}, nil
	}
	return nil, fmt.Errorf("mesh: identity %q has kind %q; want client, region, global or operator", e.ID, e.Kind)
}

// modelReads are the JetStream calls that read the model bucket, under
// the API prefix api ($JS.API, or $JS.<domain>.API), with the flow control
// and acknowledgements of its consumers last (they have no prefix).
func modelReads(job, api string) []string {
	bucket := "OBJ_" + ModelBucket(job)
	return []string{
		api + ".INFO",
		api + ".STREAM.INFO." + bucket,
		api + ".STREAM.MSG.GET." + bucket,
		api + ".DIRECT.GET." + bucket + ".>",
		api + ".CONSUMER.CREATE." + bucket, api + ".CONSUMER.CREATE." + bucket + ".>",
		api + ".CONSUMER.INFO." + bucket + ".>",
		api + ".CONSUMER.DELETE." + bucket + ".>",
		"$JS.FC." + bucket + ".>", "$JS.ACK." + bucket + ".>",
	}
}

// Connection types a user may open (nats-server's allowed_connection_types).
const (
	connStandard  = "STANDARD"
	connInProcess = "IN_PROCESS" // `strata up`'s roles share one process with the server
	connLeaf      = "LEAFNODE"
)

func connTypes(ts ...string) map[string]struct{} {
	m := make(map[string]struct{}, len(ts))
	for _, t := range ts {
		m[t] = struct{}{}
	}
	return m
}

// InboxPrefix gives each identity its own reply subjects, so no one can
// subscribe to another's replies.
func InboxPrefix(kind, id string) string { return "_INBOX_" + kind + "_" + id }

// ModelBucket is the JetStream object store bucket of a job's models.
func ModelBucket(job string) string { return "strata-models-" + job }

func validClientID(id string) error {
	if id == "" || strings.ContainsAny(id, ".*> \t\r\n") {
		return fmt.Errorf("mesh: client id %q cannot be a subject token (no '.', '*', '>' or spaces)", id)
	}
	return nil
}

// Secured configures a server the way `strata nats --secrets` runs one:
// TLS with the secrets dir's certificate, and only its identities, each
// with its role's permissions for job; a leafnode listener (LeafListen)
// requires a leaf certificate of the mesh CA (identity.LeafHubTLS). It also returns a dialer that
// connects as the secrets dir's operator ("admin") over TLS.
func Secured(cfg ServerConfig, secrets, job string) (ServerConfig, Dialer, error) {
	pub, err := identity.LoadPublic(secrets)
	if err != nil {
		return cfg, Dialer{}, err
	}
	if cfg.Users, err = Authorization(job, pub); err != nil {
		return cfg, Dialer{}, err
	}
	if cfg.TLS, err = identity.ServerTLS(secrets); err != nil {
		return cfg, Dialer{}, err
	}
	if cfg.LeafListen != "" {
		// Sites' leaf nodes come with a certificate of the mesh CA and
		// their leaf key (LeafPermissions).
		if cfg.LeafTLS, err = identity.LeafHubTLS(secrets); err != nil {
			return cfg, Dialer{}, err
		}
	}
	ctls, err := identity.ClientTLS(secrets)
	if err != nil {
		return cfg, Dialer{}, err
	}
	op, err := identity.LoadKey(secrets, identity.KindOperator, "admin")
	if err != nil {
		return cfg, Dialer{}, err
	}
	return cfg, Dialer{TLS: ctls, Key: op}, nil
}
