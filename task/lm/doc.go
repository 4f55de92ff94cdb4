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
package lm
