//! Settlement: usage that can no longer change except by a resend is folded, exactly, into
//! rows without batch identity (`usage_settled`), so that reads cost tenants × meters ×
//! minutes, not batches.
//!
//! A **fold** takes the `usage` rows inserted in a range of time `[from, to)` (by the server's
//! `inserted_at`), leaves out the batches an earlier fold took, and writes, in one INSERT, their
//! usage collapsed per key and the batch identities it took (`usage_settled`), then, last, its
//! own row in `settle_folds`: a fold counts from that row on, so a settler killed at any point
//! leaves nothing half-counted, and the next fold takes the same batches again.
//!
//! A read of live usage is then the settled rows of the folds up to a [`Watermark`] plus the
//! **tail**: `usage` rows inserted since the latest fold's `from`, less the batches folded. A
//! resend of a folded batch — minutes or weeks later, through any collector, after its raw rows
//! were dropped — is in the tail and left out by its identity, so it counts once; late *new*
//! usage for an old minute is a new batch, in the tail until the next fold adds it.
//!
//! Each fold starts `margin` before the previous one ended: rows an INSERT made visible a little
//! after the time its `inserted_at` says (a slow INSERT) are still taken by the next fold. A row
//! that became visible more than `margin` late would be in neither (never counted twice).
//!
//! Whole past days are then rolled up by day (usage) and hour (SLA): [`rollup`].
//!
//! One settler runs at a time (`tally settle`): two folding at once could both take one batch.
//!
//! This relies on one invariant of the writers: a batch's rows for one tenant are written by
//! one INSERT (the collector writes a batch as one spool record, and a spool segment as one
//! INSERT), so a fold sees all of a batch's rows or none.

pub mod fold;
pub mod rollup;
pub mod schema;

pub use fold::{fold, plan, run, Fold, FoldOptions, FoldPlan, Settled, Table, Tail, Watermark};
pub use rollup::{roll, Days, Rollup, RollupPlan};
