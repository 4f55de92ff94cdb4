// Package lm is the built-in language-model task: a byte-level
// decoder-only transformer fine-tuned with LoRA adapters on the Go
// distribution's own text.
//
// # Model
//
// Tokens are bytes (Vocab = 256). A window of t ≤ Context bytes is embedded
// (embed_tokens + learned embed_positions) and passes Layers pre-norm
// blocks, each
//
//	x += o_proj(causal_attention(q_proj(h), k_proj(h), v_proj(h))),  h = rmsnorm(x)·input_layernorm
//	x += down_proj(gelu(up_proj(h))),                               h = rmsnorm(x)·post_attention_layernorm
//
// then a final rmsnorm (norm) and an untied output projection (lm_head).
// Projections have no biases; weights are [out][in] (PyTorch's nn.Linear
// layout). Forward and backward run in float32 on gonum's BLAS (its
// assembly kernels measured 11 GFLOP/s on one core for 128³ against 5 for
// a plain Go loop); TestGradientsMatchFiniteDifferences checks every
// parameter kind against finite differences.
//
// # LoRA, and why FedAvg of it is exact (FFA-LoRA)
//
// A projection with an adapter computes h·Wᵀ + (α/r)·(h·Aᵀ)·Bᵀ, A [r][in], B
// [out][r] (Hu et al. 2021). FedAvg averages what clients send, and the
// average of products B_i·A_i is not the product of the averages, so
// averaging both factors would apply an update no client computed. This
// package follows FFA-LoRA (Sun et al. 2024): A is drawn once from the
// task seed (N(0, 1/in)), stored in the checkpoint and never trained; only
// B is trained, starting at zero so that version 0 is the pre-trained
// model. θ is the concatenation of the B matrices (Adapter.BLayout), so
// the average of the clients' θ gives exactly the average of their
// updates: mean_i(B_i)·A = mean_i(B_i·A). TestFedAvgOfBIsExact checks it,
// and that averaging trained A and B factors would not be.
//
// # Tensor names
//
// The backbone (Weights.Tensors) uses Hugging Face Llama-style names
// without the "model." prefix: embed_tokens.weight [256][d],
// embed_positions.weight [context][d], layers.N.input_layernorm.weight
// [d], layers.N.self_attn.{q,k,v,o}_proj.weight [d][d],
// layers.N.post_attention_layernorm.weight [d], layers.N.mlp.up_proj.weight
// [hidden][d], layers.N.mlp.down_proj.weight [d][hidden], norm.weight [d],
// lm_head.weight [256][d]. The adapters are ProjModule(l, p) +
// ".lora_A.weight" [r][in] (Adapter.ATensors) and ".lora_B.weight"
// [out][r] (Adapter.BLayout, θ's layout in packing order); PEFT's
// adapter_model.safetensors names them "base_model.model." + that
// (PEFTName), with lora_alpha = Adapter.Alpha and r = Adapter.Rank.
//
// # Data (the Go distribution's own tree, nothing else installed)
//
// LocateGoroot finds the tree (task.goroot, $GOROOT, `go env GOROOT`, the
// build's GOROOT) and LoadCorpus reads it once per process:
//
//   - Pre-training domain (prose): src/testdata/Isaac.Newton-Opticks.txt,
//     then doc/*.html and doc/*.md in name order. The first 90 % of each
//     file pre-trains the backbone; the last 10 % is the held-out prose
//     (the prose_bits_per_byte metric).
//   - Clients' domain (code): every .go file under src/ outside testdata
//     and vendor directories, grouped by directory (files concatenated in
//     name order). The directories are shuffled by the job's seed; the
//     first heldout_dirs (default 40) are held out — the evaluation text,
//     which no client trains on — and every other directory is cut into
//     shard_bytes pieces (default 8192), shuffled by the seed and dealt one
//     per client. A client is thus one "private repository" piece: non-IID
//     by source, disjoint from the prose and from the held-out code.
//
// The corpus depends on the Go release (its VERSION is part of the
// checkpoint's cache key).
//
// # API for commands and exports
//
// Nothing outside task/… imports this package: commands reach it through
// task.Generator and task.TensorExporter, other task/… code through these.
//
//   - Prepare(ctx, Spec) → *Task (task.Task, task.Membership,
//     task.Generator, task.TensorExporter). Task.Model(θ) → *Model.
//   - LoadModel(checkpointPath, Config, seed, θ) → *Model without the
//     corpus: the backbone from CheckpointName in the cache directory, A
//     from the settings and seed.
//   - Model.LogProbs(context) []float32: log p of the next byte given
//     the last Context bytes; NextLogProbs batches contexts of one length;
//     SequenceLogProb(prefix, text) is log p(text | prefix) in nats (for
//     Secret-Sharer exposure); Sample(prompt, k, temperature, rng).
//   - Task.ModelTensors(θ) → backbone, lora_A, lora_B as task.Values
//     (names and shapes below, float32 row-major); Task.AdapterConfig() is
//     PEFT's adapter_config.json; PEFTName maps a name to PEFT's.
package lm
