// Package trainerproto is the protocol between the edge agent and a
// trainer in another process or language (docs/trainer-protocol.md), and
// the agent's side of it.
//
// The agent does everything privacy-critical; the trainer only trains. A
// connection is a sequence of frames — a 4-byte big-endian length, a type
// byte, a version byte, a msgpack body — over a process's stdin/stdout or
// a local socket:
//
//	agent                                   trainer
//	hello {layout, personal, protocol} ──▶
//	                                   ◀── ready {trainer, personal, protocol}
//	train {client, round, recipe}      ──▶
//	chunk {offset, data} ×N (θ)        ──▶
//	                                   ◀── result {kind, examples} (or error)
//	                                   ◀── chunk ×N (delta or params)
//	evaluate {client | set} + chunks   ──▶
//	                                   ◀── evaluation {loss, metrics, accuracy}
//	shutdown                           ──▶
//
// Vectors travel as little-endian float32 in chunks of at most MaxChunk
// values, so neither side needs a frame larger than MaxFrame. Remote runs
// the agent's side: it implements the edge Trainer, and any failure of the
// trainer (crash, timeout, wrong shape, NaN) fails only the call it
// happened in, with an error naming the client, the round and what the
// trainer did; the next call starts a fresh process or connection.
//
// The messages have revisions (Protocol), negotiated in hello and ready;
// revision 2 added named metrics to Evaluation and held-out evaluations
// (Remote.EvaluateSet), with which a trainer process can stand in for a
// task's evaluation on the global tier. Peers of revision 1 still work:
// their accuracy reads as the one metric "accuracy" (Evaluation.Scores).
package trainerproto
