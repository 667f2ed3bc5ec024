//! Integration tests against the real local Kafka (scripts/kafka.sh start), linked into one
//! binary because each test binary links librdkafka.

mod billing;
mod cli;
mod deploy;
mod edges;
mod faults;
mod generator;
mod harness;
mod health;
mod history;
mod hostile;
mod http;
mod periods;
mod prometheus;
mod rates;
mod revenue;
mod scale;
mod security;
mod surveys;
mod tickets;
mod workers;
