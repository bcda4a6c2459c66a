//! [`SimRecord`]: the record type of the stream simulator.

use std::time::SystemTime;

use crate::checkpoint::SequenceNumber;
use crate::shard::ShardId;
use crate::source::StreamRecord;

/// What kind of change a simulated record is (as DynamoDB's `eventName`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// An item was created.
    Insert,
    /// An item was updated.
    Modify,
    /// An item was deleted.
    Remove,
}

/// One change in the simulated stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRecord {
    /// Position in its shard; unique across the whole simulated stream.
    pub sequence_number: SequenceNumber,
    /// The shard the record was written to.
    pub shard_id: ShardId,
    /// The item key.
    pub key: String,
    /// The kind of change.
    pub kind: ChangeKind,
    /// 1 for the first change written for this key, then 2, 3, …: the write order per item.
    pub version: u64,
    /// When the change was written (simulated wall clock).
    pub created_at: SystemTime,
}

impl StreamRecord for SimRecord {
    fn sequence_number(&self) -> &SequenceNumber {
        &self.sequence_number
    }
    fn approximate_creation_time(&self) -> Option<SystemTime> {
        Some(self.created_at)
    }
    fn partition_key(&self) -> &str {
        &self.key
    }
    /// Keys `{"pk": {"S": key}}`; the new image (not for a removal) and the old image (not
    /// for an insert) hold `pk` and the version `v`.
    fn to_filter_event(&self) -> serde_json::Value {
        use serde_json::json;
        let image = |v: u64| json!({"pk": {"S": self.key}, "v": {"N": v.to_string()}});
        let mut dynamodb = json!({
            "Keys": {"pk": {"S": self.key}},
            "SequenceNumber": self.sequence_number.as_str(),
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        });
        if self.kind != ChangeKind::Remove {
            dynamodb["NewImage"] = image(self.version);
        }
        if self.kind != ChangeKind::Insert {
            dynamodb["OldImage"] = image(self.version.saturating_sub(1));
        }
        let name = match self.kind {
            ChangeKind::Insert => "INSERT",
            ChangeKind::Modify => "MODIFY",
            ChangeKind::Remove => "REMOVE",
        };
        json!({"eventName": name, "eventSource": "aws:dynamodb", "dynamodb": dynamodb})
    }
}
