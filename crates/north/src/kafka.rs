//! The Kafka sink (`type = "kafka"`), through rskafka (pure Rust on tokio, our own rustls
//! configuration, SASL PLAIN and SCRAM; chosen over rdkafka, which brings librdkafka and
//! OpenSSL: ARCHITECTURE.md).
//!
//! - **Topic**: the configured one, `{class}` replaced by the record's class (`events`,
//!   `aggregates`, `series`, `raw`). The topic must exist; its partition count is read once per
//!   session, and at most the first [`PARTITIONS_MAX`] partitions are written to.
//! - **Key**: the record's asset path (a gateway's own events: its name), hashed (FNV-1a) onto a
//!   partition, so that one machine's records stay in order in one partition.
//! - **Value**: the record's JSON with its message id first (`wire_json`), as every JSON sink.
//! - **Headers**: `id` (the message id), `class`, `gateway`.
//! - **Delivery**: one produce request per partition and batch, LZ4-compressed unless
//!   `compression = "none"`; the broker answers only once every in-sync replica has the batch
//!   (rskafka always asks acks = -1), and only then are the records acknowledged in the outbox.
//!   A request that gets no answer within [`PRODUCE_TIMEOUT`] fails the session: the runner backs
//!   off, reconnects and sends the batch again (at-least-once; the `id` header drops duplicates).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use airlock_config::{KafkaSink as KafkaConfig, Sasl};
use airlock_model::Timestamp;
use airlock_store::OutboxRecord;
use airlock_upstream::Upstream;
use rskafka::BackoffConfig;
use rskafka::chrono::{TimeZone, Utc};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;

use crate::broker_gate::BrokerGate;
use crate::{Ledger, Limits, Sent, Sink, SinkError, message_id, wire_json};

/// A produce request must be answered within this, and a session opened.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Partitions of a topic written to, at most (the lowest-numbered). Each partition is a
/// client with its own connection to the leader the broker names, so the broker's metadata
/// must not decide how many connections (and file handles) the gateway opens: a claim of
/// 1,000 partitions opened 1,000. Sixteen carry far more than a gateway sends.
pub const PARTITIONS_MAX: usize = 16;
/// The largest answer taken from a broker (rskafka's default is 100 MB a connection); a
/// metadata answer of a cluster of a thousand topics is well under a megabyte.
const ANSWER_BYTES_MAX: usize = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct KafkaSink {
    name: String,
    gateway: String,
    config: KafkaConfig,
    client: Option<Client>,
    /// Per topic, its partitions' clients (index = partition).
    partitions: HashMap<String, Vec<Arc<PartitionClient>>>,
    ledger: Arc<Ledger>,
    /// Every connection goes through it: to the configured brokers only (opened with the
    /// first session).
    gate: Option<BrokerGate>,
}

/// The key a record is produced under: what it is about.
fn key_of(record: &Upstream, gateway: &str) -> String {
    match record {
        Upstream::Sample(s) => s.path.to_string(),
        Upstream::Aggregate(a) => a.path.to_string(),
        Upstream::Production(p) => p.asset.to_string(),
        Upstream::Oee(o) => o.asset.to_string(),
        Upstream::Event(e) => e.asset.to_string(),
        Upstream::Legacy(l) => l.topic.to_string(),
        Upstream::Gap(_) | Upstream::Recovered(_) | Upstream::Undecodable(_) => gateway.to_owned(),
    }
}

/// FNV-1a: a key's partition, stable across restarts and versions.
fn partition_of(key: &str, partitions: usize) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash % partitions.max(1) as u64) as usize
}

impl KafkaSink {
    pub fn new(name: &str, gateway: &str, config: &KafkaConfig) -> Self {
        Self {
            name: name.to_owned(),
            gateway: gateway.to_owned(),
            config: config.clone(),
            client: None,
            partitions: HashMap::new(),
            ledger: Arc::default(),
            gate: None,
        }
    }

    fn target(&self) -> String {
        self.config.brokers.join(",")
    }

    /// A failure of the session; one the gate caused names the broker it refused.
    fn failed(&self, what: impl std::fmt::Display) -> SinkError {
        let what = match self.gate.as_ref().and_then(BrokerGate::refused) {
            Some(refused) => format!(
                "{what}: the cluster named the broker {refused}, which is not in its `brokers`; the gateway connects \
                 to no broker it does not list (add it there if it is one of the cluster's)"
            ),
            None => what.to_string(),
        };
        SinkError::Rejected { target: self.target(), what }
    }

    fn topic_of(&self, record: &OutboxRecord) -> String {
        self.config.topic.replace("{class}", record.id.class.name())
    }

    /// The clients of `topic`'s partitions, looked up once per session.
    async fn partitions_of(&mut self, topic: &str) -> Result<Vec<Arc<PartitionClient>>, SinkError> {
        if let Some(p) = self.partitions.get(topic) {
            return Ok(p.clone());
        }
        let Some(client) = &self.client else { return Err(self.failed("not connected")) };
        let topics = tokio::time::timeout(PRODUCE_TIMEOUT, client.list_topics())
            .await
            .map_err(|_| self.failed("no answer to a metadata request"))?
            .map_err(|e| self.failed(format!("list the topics: {e}")))?;
        let Some(found) = topics.into_iter().find(|t| t.name == topic) else {
            return Err(self.failed(format!("the topic {topic:?} does not exist on the cluster; create it")));
        };
        // In order already (a set): the lowest numbers first.
        let mut partitions: Vec<i32> = found.partitions.into_iter().collect();
        if partitions.len() > PARTITIONS_MAX {
            log::info!(
                "sink {}: the topic {topic:?} has {} partitions; the gateway writes to the first {PARTITIONS_MAX}",
                self.name,
                partitions.len()
            );
            partitions.truncate(PARTITIONS_MAX);
        }
        let mut clients = Vec::new();
        for p in partitions {
            let made = client.partition_client(topic.to_owned(), p, UnknownTopicHandling::Error);
            // A leader the gate refuses fails at rskafka's backoff deadline, and the failure
            // names it; a broker refused while rskafka looked for any one (it picks at random
            // among those the cluster names) and then found a listed one fails nothing.
            let made = tokio::time::timeout(PRODUCE_TIMEOUT, made)
                .await
                .map_err(|_| self.failed("no answer while finding a partition's leader"))?
                .map_err(|e| self.failed(format!("the partition {topic}/{p}: {e}")))?;
            clients.push(Arc::new(made));
        }
        if clients.is_empty() {
            return Err(self.failed(format!("the topic {topic:?} has no partition")));
        }
        self.partitions.insert(topic.to_owned(), clients.clone());
        Ok(clients)
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn ledger(&mut self, ledger: Arc<Ledger>) {
        self.ledger = ledger;
    }

    fn limits(&self) -> Limits {
        Limits {
            batch_max: 1000,
            window: 1000,
            rate_max_per_s: Some(self.config.rate_max_per_s),
            replay: self.config.replay,
        }
    }

    async fn open(&mut self) -> Result<(), SinkError> {
        self.client = None;
        self.partitions.clear();
        let gate = match self.gate.take() {
            Some(gate) => gate,
            None => BrokerGate::open(&self.config.brokers)
                .await
                .map_err(|e| self.failed(format!("open the broker gate on loopback: {e}")))?,
        };
        gate.forget_refused();
        let proxy = gate.address.to_string();
        self.gate = Some(gate);
        let backoff = BackoffConfig { deadline: Some(CONNECT_TIMEOUT), ..BackoffConfig::default() };
        let mut builder = ClientBuilder::new(self.config.brokers.clone())
            .client_id(format!("airlock-{}-{}", self.gateway, self.name))
            .max_message_size(ANSWER_BYTES_MAX)
            .backoff_config(backoff)
            .socks5_proxy(proxy);
        if self.config.tls {
            let client_cert = self.config.client_cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
            let tls =
                airlock_tls::client_config(self.config.ca_file.as_deref(), client_cert).map_err(|e| self.failed(e))?;
            builder = builder.tls_config(Arc::new(tls));
        }
        if let Some((mechanism, user, secret)) = &self.config.sasl {
            let password = secret.read().map_err(|e| self.failed(format!("the SASL password: {e}")))?;
            let credentials = Credentials::new(user.clone(), password);
            builder = builder.sasl_config(match mechanism {
                Sasl::Plain => SaslConfig::Plain(credentials),
                Sasl::ScramSha256 => SaslConfig::ScramSha256(credentials),
                Sasl::ScramSha512 => SaslConfig::ScramSha512(credentials),
            });
        }
        let client = tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(5), builder.build())
            .await
            .map_err(|_| self.failed("no broker answered"))?
            .map_err(|e| self.failed(format!("connect: {e}")))?;
        self.client = Some(client);
        log::info!("sink {}: connected to {}", self.name, self.target());
        Ok(())
    }

    async fn send(&mut self, records: &[OutboxRecord]) -> Result<Sent, SinkError> {
        // Per topic and partition, in the order the records came: one produce request each.
        let mut groups: Vec<(String, usize, Arc<PartitionClient>, Vec<&OutboxRecord>)> = Vec::new();
        for r in records {
            let topic = self.topic_of(r);
            let partitions = self.partitions_of(&topic).await?;
            let partition = partition_of(&key_of(&r.record, &self.gateway), partitions.len());
            match groups.iter_mut().find(|(t, p, ..)| *t == topic && *p == partition) {
                Some((.., group)) => group.push(r),
                None => groups.push((topic, partition, Arc::clone(&partitions[partition]), vec![r])),
            }
        }
        let compression = if self.config.lz4 { Compression::Lz4 } else { Compression::NoCompression };
        for (topic, partition, client, group) in groups {
            let mut batch = Vec::with_capacity(group.len());
            let mut bytes = 0;
            for r in &group {
                let mut value = Vec::with_capacity(256);
                wire_json(&self.gateway, r, &mut value);
                let headers = BTreeMap::from([
                    ("id".to_owned(), message_id(&self.gateway, r).into_bytes()),
                    ("class".to_owned(), r.id.class.name().as_bytes().to_vec()),
                    ("gateway".to_owned(), self.gateway.as_bytes().to_vec()),
                ]);
                let key = key_of(&r.record, &self.gateway).into_bytes();
                bytes += key.len() + value.len();
                let timestamp = Utc.timestamp_millis_opt(r.time.as_millis()).single().unwrap_or_default();
                batch.push(Record { key: Some(key), value: Some(value), headers, timestamp });
            }
            // The ledger keeps the first record's value as the message's sample payload.
            let first = batch.first().and_then(|r| r.value.clone()).unwrap_or_default();
            let produced = tokio::time::timeout(PRODUCE_TIMEOUT, client.produce(batch, compression))
                .await
                .map_err(|_| self.failed(format!("no answer to a produce request to {topic}/{partition}")))?
                .map_err(|e| self.failed(format!("produce to {topic}/{partition}: {e}")))?;
            if produced.len() != group.len() {
                return Err(self.failed(format!("{} offsets for {} records", produced.len(), group.len())));
            }
            let label = format!("{topic}/{partition}");
            self.ledger.sent_as(Timestamp::now(), &label, group.iter().copied(), &first, bytes);
        }
        Ok(Sent::Delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_always_lands_on_one_partition() {
        let p = partition_of("acme/site/area/line/cell/press1/speed", 6);
        for _ in 0..3 {
            assert_eq!(partition_of("acme/site/area/line/cell/press1/speed", 6), p);
        }
        assert!(p < 6);
        assert_eq!(partition_of("anything", 1), 0);
        let spread: std::collections::BTreeSet<usize> = (0..100).map(|i| partition_of(&format!("m{i}"), 4)).collect();
        assert_eq!(spread.len(), 4, "keys spread over every partition");
    }
}
