package mesh

import (
	"fmt"

	"github.com/strata-fl/strata/topology"
)

// Subjects are built only here, from validated tokens:
//
//	strata.<job>.round.<region>    round.open for one region's aggregator (request/reply:
//	                               the region acknowledges before clients hear of the round)
//	strata.<job>.clients.<region>  round.open for one region's clients
//	strata.<job>.update.<region>   client updates (edge → region)
//	strata.<job>.partial           regional partials (region → global)
//	strata.<job>.done              end of job (global → all)
const prefix = "strata"

// Subject helpers return an error when a token is not a valid name.
func RoundSubject(job, region string) (string, error) {
	return joinRegion(job, "round", region)
}

// ClientRoundSubject announces rounds to a region's clients, after the
// region acknowledged the round on RoundSubject.
func ClientRoundSubject(job, region string) (string, error) {
	return joinRegion(job, "clients", region)
}

// PingSubject is where a region answers liveness checks; the global tier
// opens a round (and so charges its cost) only when enough regions answer.
func PingSubject(job, region string) (string, error) {
	return joinRegion(job, "ping", region)
}

// UpdateSubject is where a region's clients publish their updates.
func UpdateSubject(job, region string) (string, error) {
	return joinRegion(job, "update", region)
}

// PartialSubject is where regions publish their partials.
func PartialSubject(job string) (string, error) { return join(job, "partial", "") }

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
