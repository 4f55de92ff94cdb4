package topology

// Pacing recalibrates the noise before every round so that the public ε
// lands on a target at the end of the planned rounds (budget pacing).
type Pacing struct {
	// TargetEpsilon is the public ε to spend by the last planned round; 0
	// turns pacing off. It must not exceed privacy.budget.
	TargetEpsilon float64 `yaml:"target_epsilon,omitempty"`
	// Patience ends the job early when the evaluation loss has not improved
	// for this many rounds, leaving the rest of the budget unspent; 0 never
	// stops early.
	Patience int `yaml:"patience,omitempty"`
}

// AdaptiveClip makes the clip norm follow a quantile of update norms
// (Andrew et al. 2021), with the clipped-count bits summed through the tiers
// and their noise accounted.
type AdaptiveClip struct {
	Enabled bool `yaml:"enabled,omitempty"`
	// Quantile γ the clip norm tracks; default 0.5.
	Quantile float64 `yaml:"quantile,omitempty"`
	// LearningRate η_C of the geometric update; default 0.2.
	LearningRate float64 `yaml:"learning_rate,omitempty"`
	// BitNoise σ_b is the standard deviation of the noise on the count of
	// clipped updates; default expected participants / 20.
	BitNoise float64 `yaml:"bit_noise,omitempty"`
}
