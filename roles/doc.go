// Package roles is Strata's one composition root: it builds each role of a
// mesh — the NATS server, a global node, a regional aggregator, a fleet of
// edge clients — from a Config with defaults and a Validate, and runs it
// with Run(ctx). `strata nats|global|regional|edge` build one role each
// from their flags; `strata up` (Up) runs all of them in one process over
// an embedded server, through the same code, so that a one-process job
// exercises the deployment's path (raft leadership, the control service);
// the bench and the whole-mesh tests build their meshes here too
// (roles/rolestest).
package roles
