//! Cluster tests: every test starts its own servers on 127.0.0.1 port 0 in this process.
//! One concern per file.

mod bad_input;
mod data_bad_input;
mod data_failover;
mod data_race;
mod data_restart;
mod data_scale;
mod exit_data_drain;
mod exit_meta_handover;
mod exit_session_go_away;
mod meta_bad_input;
mod meta_crash_detection;
mod meta_failover;
mod meta_fixture;
mod meta_leases;
mod meta_partition;
mod meta_replace_node;
mod meta_restart;
mod process;
mod pubsub;
mod security_clients;
mod security_cluster_links;
mod security_rotation;
mod session_backpressure;
mod session_failover;
mod session_reconcile;
mod standalone;
