//! Cluster tests: every test starts its own servers on 127.0.0.1 port 0 in this process.
//! One concern per file.

mod bad_input;
mod data_bad_input;
mod data_epoch_ahead;
mod data_failover;
mod data_race;
mod data_restart;
mod data_scale;
mod decoders;
mod meta_bad_input;
mod meta_crash_detection;
mod meta_failover;
mod meta_fixture;
mod meta_frozen_member;
mod meta_leases;
mod meta_partition;
mod meta_replace_node;
mod meta_restart;
mod operator_admin;
mod operator_ready;
mod pubsub;
mod security_clients;
mod security_cluster_links;
mod security_limits;
mod security_rotation;
mod security_tls;
mod session_backpressure;
mod session_batch_bytes;
mod session_failover;
mod session_partial_loss;
mod session_reconcile;
mod session_sigterm;
mod standalone;
