package empirical

import (
	"fmt"
	"math"
	"slices"
)

// MIA is the outcome of a membership inference attack that scores
// examples (higher = more likely a training member).
type MIA struct {
	// AUC is the area under the ROC curve: the probability that a random
	// member scores above a random non-member (ties count one half).
	// 0.5 is chance.
	AUC float64 `json:"auc"`
	// TPRAtFPR is the fraction of members flagged by the threshold whose
	// false positive rate on non-members is at most FPR.
	TPRAtFPR float64 `json:"tpr_at_fpr"`
	FPR      float64 `json:"fpr"`
	// Members and NonMembers are the sample sizes.
	Members    int `json:"members"`
	NonMembers int `json:"non_members"`
}

// Attack evaluates scores of members against non-members. The loss-threshold
// attack (Yeom et al. 2018) passes the negated loss of each example under
// the released model as its score.
func Attack(members, nonMembers []float64, fpr float64) (MIA, error) {
	if len(members) == 0 || len(nonMembers) == 0 {
		return MIA{}, fmt.Errorf("%w: %d members and %d non-members: need both", ErrInvalid, len(members), len(nonMembers))
	}
	if !(fpr > 0 && fpr < 1) {
		return MIA{}, fmt.Errorf("%w: fpr = %v: must be in (0, 1)", ErrInvalid, fpr)
	}
	for _, v := range slices.Concat(members, nonMembers) {
		if math.IsNaN(v) {
			return MIA{}, fmt.Errorf("%w: a membership score is NaN", ErrInvalid)
		}
	}
	m := slices.Sorted(slices.Values(members))
	n := slices.Sorted(slices.Values(nonMembers))
	// AUC by Mann–Whitney: for each member, non-members below it plus half
	// of the ties.
	var wins float64
	for _, x := range m {
		lo, _ := slices.BinarySearch(n, x)
		hi := lo
		for hi < len(n) && n[hi] == x {
			hi++
		}
		wins += float64(lo) + float64(hi-lo)/2
	}
	res := MIA{AUC: wins / (float64(len(m)) * float64(len(n))), FPR: fpr, Members: len(m), NonMembers: len(n)}
	// Flag scores strictly above τ, the (k+1)-th largest non-member score,
	// with k the false positives allowed: at most k non-members exceed τ.
	k := int(math.Floor(fpr * float64(len(n))))
	tau := math.Inf(1)
	if k < len(n) {
		tau = n[len(n)-1-k]
	}
	idx, _ := slices.BinarySearch(m, math.Nextafter(tau, math.Inf(1)))
	res.TPRAtFPR = float64(len(m)-idx) / float64(len(m))
	return res, nil
}
