//! A loopback counting proxy: one per worker, in front of DynamoDB Local, so that each
//! worker's requests are counted on their own.
//!
//! The proxy forwards bytes as they come and reads the HTTP/1.1 messages out of both
//! directions ([`crate::http::Framer`]). Each request is classified by its `X-Amz-Target`
//! and its JSON body ([`classify`]): writes to the lease table are split into heartbeat,
//! lease (take, renew, release, create) and checkpoint writes; reads into `GetItem`, `Scan`
//! and `Query`; stream calls into `GetRecords`, `GetShardIterator` and `DescribeStream`.
//! Answers to `Scan` are matched to their request (the SDK sends one request at a time per
//! connection) to note how many bytes and items each scan returned.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use kcl_adapter::lease_table::attribute;
use kcl_core::LeaseKey;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::http::{Framer, Message};

/// What one request was, for counting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A write to a heartbeat item (`__kcl_worker__#…`, the change notice included).
    HeartbeatWrite,
    /// A write to a shard lease that sets its checkpoint.
    CheckpointWrite,
    /// Any other write to a shard lease: take, renew, release, create, delete.
    LeaseWrite,
    /// `GetItem`, strongly consistent (`ConsistentRead: true`): one read unit.
    GetItem,
    /// `GetItem`, eventually consistent (the lease store's `peek`): half a read unit.
    GetItemEventual,
    /// `Scan`.
    Scan,
    /// `Query`.
    Query,
    /// `DescribeTable` (control plane: not billed).
    DescribeTable,
    /// DynamoDB Streams `GetRecords`.
    GetRecords,
    /// DynamoDB Streams `GetShardIterator`.
    GetShardIterator,
    /// DynamoDB Streams `DescribeStream`.
    DescribeStream,
    /// Anything else: the operation's name.
    Other(String),
}

/// Requests counted by one proxy since it started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Heartbeat writes.
    pub heartbeat_writes: u64,
    /// Checkpoint writes.
    pub checkpoint_writes: u64,
    /// Other shard-lease writes.
    pub lease_writes: u64,
    /// Strongly consistent `GetItem` requests.
    pub get_item: u64,
    /// Eventually consistent `GetItem` requests.
    pub get_item_eventual: u64,
    /// `Scan` requests.
    pub scan: u64,
    /// Read request units of the scans: for each answer, its JSON body's size in 4 KB units
    /// (at least 1). The JSON is larger than the items as DynamoDB sizes them, so this errs
    /// high.
    pub scan_read_units: u64,
    /// Items the scans returned (`ScannedCount`).
    pub scanned_items: u64,
    /// `Query` requests.
    pub query: u64,
    /// `DescribeTable` requests.
    pub describe_table: u64,
    /// `GetRecords` requests.
    pub get_records: u64,
    /// `GetShardIterator` requests.
    pub get_shard_iterator: u64,
    /// `DescribeStream` requests.
    pub describe_stream: u64,
    /// Other operations, by name.
    pub other: BTreeMap<String, u64>,
    /// Connections whose messages could not be read, with the reason.
    pub unreadable: Vec<String>,
}

impl Counts {
    /// Lease-table writes (heartbeat + lease + checkpoint).
    pub fn lease_table_writes(&self) -> u64 {
        self.heartbeat_writes + self.lease_writes + self.checkpoint_writes
    }

    /// Lease-table read requests (`GetItem` of both kinds + `Scan` + `Query`).
    pub fn lease_table_reads(&self) -> u64 {
        self.get_item + self.get_item_eventual + self.scan + self.query
    }

    /// Lease-table read request units: one per strongly consistent `GetItem` (≤ 4 KB), half
    /// of one per eventually consistent one, [`Counts::scan_read_units`] for the scans, one per
    /// `Query`.
    pub fn lease_table_read_units(&self) -> f64 {
        self.get_item as f64 + self.get_item_eventual as f64 / 2.0 + (self.scan_read_units + self.query) as f64
    }

    /// The counts of the window since `earlier` (a snapshot of the same proxy).
    pub fn since(&self, earlier: &Counts) -> Counts {
        let other = self
            .other
            .iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(earlier.other.get(k).copied().unwrap_or(0))))
            .filter(|(_, v)| *v > 0)
            .collect();
        Counts {
            heartbeat_writes: self.heartbeat_writes.saturating_sub(earlier.heartbeat_writes),
            checkpoint_writes: self.checkpoint_writes.saturating_sub(earlier.checkpoint_writes),
            lease_writes: self.lease_writes.saturating_sub(earlier.lease_writes),
            get_item: self.get_item.saturating_sub(earlier.get_item),
            get_item_eventual: self.get_item_eventual.saturating_sub(earlier.get_item_eventual),
            scan: self.scan.saturating_sub(earlier.scan),
            scan_read_units: self.scan_read_units.saturating_sub(earlier.scan_read_units),
            scanned_items: self.scanned_items.saturating_sub(earlier.scanned_items),
            query: self.query.saturating_sub(earlier.query),
            describe_table: self.describe_table.saturating_sub(earlier.describe_table),
            get_records: self.get_records.saturating_sub(earlier.get_records),
            get_shard_iterator: self.get_shard_iterator.saturating_sub(earlier.get_shard_iterator),
            describe_stream: self.describe_stream.saturating_sub(earlier.describe_stream),
            other,
            unreadable: self.unreadable.iter().skip(earlier.unreadable.len()).cloned().collect(),
        }
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &Counts) {
        self.heartbeat_writes += other.heartbeat_writes;
        self.checkpoint_writes += other.checkpoint_writes;
        self.lease_writes += other.lease_writes;
        self.get_item += other.get_item;
        self.get_item_eventual += other.get_item_eventual;
        self.scan += other.scan;
        self.scan_read_units += other.scan_read_units;
        self.scanned_items += other.scanned_items;
        self.query += other.query;
        self.describe_table += other.describe_table;
        self.get_records += other.get_records;
        self.get_shard_iterator += other.get_shard_iterator;
        self.describe_stream += other.describe_stream;
        for (k, v) in &other.other {
            *self.other.entry(k.clone()).or_default() += v;
        }
        self.unreadable.extend(other.unreadable.iter().cloned());
    }

    fn count(&mut self, op: &Op) {
        match op {
            Op::HeartbeatWrite => self.heartbeat_writes += 1,
            Op::CheckpointWrite => self.checkpoint_writes += 1,
            Op::LeaseWrite => self.lease_writes += 1,
            Op::GetItem => self.get_item += 1,
            Op::GetItemEventual => self.get_item_eventual += 1,
            Op::Scan => self.scan += 1,
            Op::Query => self.query += 1,
            Op::DescribeTable => self.describe_table += 1,
            Op::GetRecords => self.get_records += 1,
            Op::GetShardIterator => self.get_shard_iterator += 1,
            Op::DescribeStream => self.describe_stream += 1,
            Op::Other(name) => *self.other.entry(name.clone()).or_default() += 1,
        }
    }
}

/// Classifies a request by its `X-Amz-Target` (`DynamoDB_20120810.UpdateItem`) and body.
pub fn classify(target: &str, body: &[u8]) -> Op {
    let operation = target.rsplit('.').next().unwrap_or(target);
    let json = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let lease_key = |value: &Value, field: &str| -> Option<String> {
        value.get(field)?.get(attribute::LEASE_KEY)?.get("S")?.as_str().map(str::to_owned)
    };
    let write = |key: Option<String>, sets_checkpoint: bool| match key {
        Some(k) if k.starts_with(LeaseKey::HEARTBEAT_PREFIX) => Op::HeartbeatWrite,
        _ if sets_checkpoint => Op::CheckpointWrite,
        _ => Op::LeaseWrite,
    };
    match operation {
        "UpdateItem" => {
            let value = json();
            let expression = value.get("UpdateExpression").and_then(Value::as_str).unwrap_or_default();
            let names_checkpoint = value
                .get("ExpressionAttributeNames")
                .and_then(|n| n.get("#checkpoint"))
                .and_then(Value::as_str)
                .is_some_and(|a| a == attribute::CHECKPOINT);
            write(lease_key(&value, "Key"), names_checkpoint && expression.contains("#checkpoint"))
        }
        "PutItem" => write(lease_key(&json(), "Item"), false),
        "DeleteItem" => write(lease_key(&json(), "Key"), false),
        // DynamoDB's default is an eventually consistent read.
        "GetItem" if json().get("ConsistentRead").and_then(Value::as_bool) == Some(true) => Op::GetItem,
        "GetItem" => Op::GetItemEventual,
        "Scan" => Op::Scan,
        "Query" => Op::Query,
        "DescribeTable" => Op::DescribeTable,
        "GetRecords" => Op::GetRecords,
        "GetShardIterator" => Op::GetShardIterator,
        "DescribeStream" => Op::DescribeStream,
        other => Op::Other(other.to_owned()),
    }
}

/// A running proxy. Dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Mutex::new(Counts::default()));
        let shared = Arc::clone(&counts);
        let accept = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        let _ = client.set_nodelay(true);
                        connections.spawn(forward(client, upstream, Arc::clone(&shared)));
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        Ok(Self { addr, counts, accept })
    }

    /// `http://ADDR`, for an SDK client's endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts the connections.
        self.accept.abort();
    }
}

/// Forwards one connection, counting its requests and reading the answers to its scans.
async fn forward(mut client: TcpStream, upstream: SocketAddr, counts: Arc<Mutex<Counts>>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    // Whether each request still waiting for its answer is a Scan, oldest first.
    let waiting: Mutex<VecDeque<bool>> = Mutex::new(VecDeque::new());
    let note_broken = |why: Option<String>| {
        if let Some(why) = why {
            counts.lock().unwrap_or_else(PoisonError::into_inner).unreadable.push(why);
        }
    };
    let requests = async {
        let mut framer = Framer::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let messages = framer.feed(&buf[..n]);
            if !messages.is_empty() {
                let ops: Vec<Op> = messages.iter().map(op_of).collect();
                let mut queue = waiting.lock().unwrap_or_else(PoisonError::into_inner);
                let mut c = counts.lock().unwrap_or_else(PoisonError::into_inner);
                for op in &ops {
                    c.count(op);
                    queue.push_back(*op == Op::Scan);
                }
            }
            note_broken(framer.broken.take());
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let responses = async {
        let mut framer = Framer::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for message in framer.feed(&buf[..n]) {
                let was_scan = waiting.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
                if was_scan == Some(true) {
                    let items = serde_json::from_slice::<Value>(&message.body)
                        .ok()
                        .and_then(|v| v.get("ScannedCount")?.as_u64())
                        .unwrap_or(0);
                    let units = u64::try_from(message.body.len().div_ceil(4096).max(1)).unwrap_or(u64::MAX);
                    let mut c = counts.lock().unwrap_or_else(PoisonError::into_inner);
                    c.scan_read_units += units;
                    c.scanned_items += items;
                }
            }
            note_broken(framer.broken.take());
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(requests, responses);
}

fn op_of(message: &Message) -> Op {
    let target = message.header("x-amz-target").unwrap_or(&message.start_line);
    classify(target, &message.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_lease_table_and_stream_requests() {
        let checkpoint = br##"{"TableName":"app","Key":{"leaseKey":{"S":"shardId-1"}},
            "UpdateExpression":"SET #checkpoint = :checkpoint, #counter = :next_counter",
            "ExpressionAttributeNames":{"#checkpoint":"checkpoint","#counter":"leaseCounter"}}"##;
        let renew = br##"{"TableName":"app","Key":{"leaseKey":{"S":"shardId-1"}},
            "UpdateExpression":"SET #counter = :next_counter","ExpressionAttributeNames":{"#counter":"leaseCounter"}}"##;
        let heartbeat = br##"{"TableName":"app","Key":{"leaseKey":{"S":"__kcl_worker__#w1#0"}},
            "UpdateExpression":"SET #counter = :next_counter"}"##;
        let create_heartbeat = br#"{"TableName":"app","Item":{"leaseKey":{"S":"__kcl_worker__#w1#0"}}}"#;
        let create_lease = br#"{"TableName":"app","Item":{"leaseKey":{"S":"shardId-2"}}}"#;
        let cases: [(&str, &[u8], Op); 12] = [
            ("DynamoDB_20120810.UpdateItem", checkpoint, Op::CheckpointWrite),
            ("DynamoDB_20120810.UpdateItem", renew, Op::LeaseWrite),
            ("DynamoDB_20120810.UpdateItem", heartbeat, Op::HeartbeatWrite),
            ("DynamoDB_20120810.PutItem", create_heartbeat, Op::HeartbeatWrite),
            ("DynamoDB_20120810.PutItem", create_lease, Op::LeaseWrite),
            ("DynamoDB_20120810.GetItem", br#"{"ConsistentRead":true}"#, Op::GetItem),
            ("DynamoDB_20120810.GetItem", br#"{"ConsistentRead":false}"#, Op::GetItemEventual),
            ("DynamoDB_20120810.GetItem", b"{}", Op::GetItemEventual),
            ("DynamoDB_20120810.Scan", b"{}", Op::Scan),
            ("DynamoDBStreams_20120810.GetRecords", b"{}", Op::GetRecords),
            ("DynamoDBStreams_20120810.DescribeStream", b"{}", Op::DescribeStream),
            ("DynamoDB_20120810.ListTables", b"{}", Op::Other("ListTables".to_owned())),
        ];
        for (target, body, want) in cases {
            assert_eq!(classify(target, body), want, "{target} {}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_window_subtracts_the_earlier_snapshot() {
        let mut before = Counts::default();
        before.count(&Op::GetItem);
        let mut after = before.clone();
        after.count(&Op::GetItem);
        after.count(&Op::HeartbeatWrite);
        after.count(&Op::Other("X".to_owned()));
        after.count(&Op::GetItemEventual);
        let window = after.since(&before);
        assert_eq!((window.get_item, window.heartbeat_writes, window.lease_table_writes()), (1, 1, 1));
        // A strongly consistent read is a unit, an eventually consistent one half.
        assert_eq!((window.lease_table_reads(), window.lease_table_read_units()), (2, 1.5));
        assert_eq!(window.other.get("X"), Some(&1));
    }
}
