//! The collector: one per run, outside the traced programs. It reads every process's ring,
//! merges the records in time order, turns them into packets and writes the capture.

pub mod machine;
