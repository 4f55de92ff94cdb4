package mesh

import (
	"fmt"

	"github.com/strata-fl/strata/topology"
)

// Subjects are built only here, from validated tokens:
//
//	strata.<job>.round.<region>    round.open for one region's aggregator (request/reply:
//	                               the region acknowledges before clients hear of the round)
//	strata.<job>.invite.<region>.<client>  round.open for one sampled client: only it may read it
//	strata.<job>.update.<region>.<client>  one client's updates (edge → region)
//	strata.<job>.partial.<region>  regional partials (region → global)
//	strata.<job>.registry.<region> a region asks the global tier for enrolled keys
//	strata.<job>.secagg.<region>.<client>     one client's secure-aggregation messages (edge → region)
//	strata.<job>.secagg_to.<region>.<client>  the region's secure-aggregation messages to one client
//	strata.<job>.done              end of job (global → all)
const prefix = "strata"

// Subject helpers return an error when a token is not a valid name.
func RoundSubject(job, region string) (string, error) {
	return joinRegion(job, "round", region)
}

// InviteSubject is where one sampled client hears of a round, after its
// region acknowledged the round on RoundSubject. One subject per client, so
// that NATS authorization lets each read only its own: a client learns its
// own sampling decision and no other's (sampling amplification holds
// against fellow clients; docs/privacy-model.md).
func InviteSubject(job, region, client string) (string, error) {
	return clientSubject(job, "invite", region, client)
}

// PingSubject is where a region answers liveness checks; the global tier
// opens a round (and so charges its cost) only when enough regions answer.
func PingSubject(job, region string) (string, error) {
	return joinRegion(job, "ping", region)
}

// InviteWildcard matches every invitation of a region's clients: only the
// global tier and operators may subscribe to it.
func InviteWildcard(job, region string) (string, error) {
	s, err := joinRegion(job, "invite", region)
	return s + ".*", err
}

// UpdateSubject is where one client publishes its updates: one subject per
// client, so NATS authorization can let it publish nowhere else.
func UpdateSubject(job, region, client string) (string, error) {
	s, err := joinRegion(job, "update", region)
	if err != nil {
		return "", err
	}
	if err := validClientID(client); err != nil {
		return "", err
	}
	return s + "." + client, nil
}

// UpdateWildcard is what a region subscribes to: all its clients' updates.
func UpdateWildcard(job, region string) (string, error) {
	s, err := joinRegion(job, "update", region)
	return s + ".*", err
}

// SecAggSubject is where one client sends its secure-aggregation messages
// to its region; like updates, one subject per client.
func SecAggSubject(job, region, client string) (string, error) {
	return clientSubject(job, "secagg", region, client)
}

// SecAggWildcard is what a region subscribes to for its clients' secure
// aggregation messages.
func SecAggWildcard(job, region string) (string, error) {
	s, err := joinRegion(job, "secagg", region)
	return s + ".*", err
}

// SecAggToSubject is where a region sends one client its secure-aggregation
// messages; only that client may read it.
func SecAggToSubject(job, region, client string) (string, error) {
	return clientSubject(job, "secagg_to", region, client)
}

func clientSubject(job, kind, region, client string) (string, error) {
	s, err := joinRegion(job, kind, region)
	if err != nil {
		return "", err
	}
	if err := validClientID(client); err != nil {
		return "", err
	}
	return s + "." + client, nil
}

// PartialSubject is where one region publishes its partials.
func PartialSubject(job, region string) (string, error) { return joinRegion(job, "partial", region) }

// PartialWildcard is what the global tier subscribes to.
func PartialWildcard(job string) (string, error) {
	s, err := join(job, "partial", "")
	return s + ".*", err
}

// RegistrySubject is where a region asks for its clients' enrolled keys.
func RegistrySubject(job, region string) (string, error) { return joinRegion(job, "registry", region) }

// RegistryWildcard is what global nodes answer on.
func RegistryWildcard(job string) (string, error) {
	s, err := join(job, "registry", "")
	return s + ".*", err
}

// DoneSubject announces the end of a job.
func DoneSubject(job string) (string, error) { return join(job, "done", "") }

func join(job, kind, _ string) (string, error) {
	if err := topology.ValidToken(job); err != nil {
		return "", fmt.Errorf("mesh: job name: %w", err)
	}
	return prefix + "." + job + "." + kind, nil
}

func joinRegion(job, kind, region string) (string, error) {
	s, err := join(job, kind, "")
	if err != nil {
		return "", err
	}
	if err := topology.ValidToken(region); err != nil {
		return "", fmt.Errorf("mesh: region name: %w", err)
	}
	return s + "." + region, nil
}
