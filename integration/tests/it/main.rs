//! Cluster tests: every test starts its own servers on 127.0.0.1 port 0 in this process.
//! One concern per file.

mod bad_input;
mod pubsub;
mod standalone;
