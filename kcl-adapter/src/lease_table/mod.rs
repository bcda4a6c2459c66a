//! [`DynamoLeaseStore`]: the core's [`LeaseStore`] on a DynamoDB table in Java KCL's layout.
//!
//! One item per shard (hash key `leaseKey`), attributes named as Java KCL names them (see
//! [`attribute`]), so a table written by KCL with the DynamoDB Streams adapter is read and
//! continued as is. Every mutation is a conditional write on `leaseCounter` and `leaseOwner`
//! (or on the key's absence, for creation); a failed condition is
//! [`LeaseUpdate::Lost`], not an error. Writes touch only their own attributes, so attributes
//! this crate does not know survive. Reads are strongly consistent (`peek` aside: see
//! [`LeaseStore::peek`]) and scans paginate.
//! Creating the table is [`DynamoLeaseStore::ensure_table`], not part of the seam.

mod item;
mod table;

pub use item::attribute;
pub use table::{BillingMode, DEFAULT_ACTIVE_TIMEOUT, TableOptions};

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use kcl_core::{Checkpoint, Lease, LeaseKey, LeaseStore, LeaseStoreError, LeaseUpdate, WindowState, WorkerId};

use crate::boxed::Boxed;
use crate::error::{code_of, lease_error};
use attribute as a;

/// The lease table of one application, on DynamoDB.
///
/// Cheap to clone (the SDK client is shared).
#[derive(Clone, Debug)]
pub struct DynamoLeaseStore {
    client: Client,
    table: Arc<str>,
}

/// What an update changes besides the counter, which every write bumps.
enum Change<'a> {
    Renew,
    Take(&'a WorkerId),
    Checkpoint(&'a Checkpoint, Option<&'a WindowState>),
    Release,
}

impl DynamoLeaseStore {
    /// `GetItem` of one lease, strongly or eventually consistent.
    async fn get_item(&self, key: &LeaseKey, consistent: bool) -> Result<Option<Lease>, LeaseStoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&*self.table)
            .set_key(Some(self.key(key)))
            .consistent_read(consistent)
            .send()
            .boxed()
            .await
            .map_err(|e| lease_error(&format!("GetItem {key} of lease table {}", self.table), e))?;
        out.item.map(|item| item::from_item(&self.table, &item)).transpose()
    }

    /// A store on `table_name` (the application name, as in Java KCL). Makes no call; see
    /// [`DynamoLeaseStore::ensure_table`] to create the table.
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        Self { client, table: Arc::from(table_name.into()) }
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    fn key(&self, key: &LeaseKey) -> HashMap<String, AttributeValue> {
        HashMap::from([(a::LEASE_KEY.to_owned(), AttributeValue::S(key.as_str().to_owned()))])
    }

    /// `leaseCounter = :expected_counter AND (leaseOwner = :expected_owner | no leaseOwner)`,
    /// with its names (`#counter`, `#owner`) and values added.
    fn guard(
        expected: &Lease,
        names: &mut HashMap<String, String>,
        values: &mut HashMap<String, AttributeValue>,
    ) -> String {
        names.insert("#counter".to_owned(), a::LEASE_COUNTER.to_owned());
        names.insert("#owner".to_owned(), a::LEASE_OWNER.to_owned());
        values.insert(":expected_counter".to_owned(), item::number(expected.counter));
        match &expected.owner {
            Some(owner) => {
                values.insert(":expected_owner".to_owned(), AttributeValue::S(owner.as_str().to_owned()));
                "#counter = :expected_counter AND #owner = :expected_owner".to_owned()
            }
            None => "#counter = :expected_counter AND attribute_not_exists(#owner)".to_owned(),
        }
    }

    /// The conditional `UpdateItem` behind renew, take, checkpoint and release.
    async fn update(&self, op: &str, expected: &Lease, change: Change<'_>) -> Result<LeaseUpdate, LeaseStoreError> {
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let condition = Self::guard(expected, &mut names, &mut values);
        values.insert(":next_counter".to_owned(), item::number(expected.counter.wrapping_add(1)));
        let mut name = |placeholder: &str, attr: &str| {
            names.insert(placeholder.to_owned(), attr.to_owned());
        };
        let expression = match change {
            // The requests the owner has seen (in its last renewal's answer) are done with.
            Change::Renew if expected.handoff_requests.is_empty() => "SET #counter = :next_counter".to_owned(),
            Change::Renew => {
                let mut seen = Vec::new();
                for (i, r) in expected.handoff_requests.iter().enumerate() {
                    let placeholder = format!("#seen{i}");
                    name(&placeholder, &item::request_attribute(&r.from));
                    seen.push(placeholder);
                }
                format!("SET #counter = :next_counter REMOVE {}", seen.join(", "))
            }
            Change::Take(new_owner) => {
                values.insert(":new_owner".to_owned(), AttributeValue::S(new_owner.as_str().to_owned()));
                if expected.owner.as_ref() == Some(new_owner) {
                    "SET #owner = :new_owner, #counter = :next_counter".to_owned()
                } else {
                    name("#switches", a::OWNER_SWITCHES_SINCE_CHECKPOINT);
                    values.insert(":one".to_owned(), item::number(1));
                    "SET #owner = :new_owner, #counter = :next_counter ADD #switches :one".to_owned()
                }
            }
            Change::Checkpoint(checkpoint, window) => {
                name("#checkpoint", a::CHECKPOINT);
                name("#sub", a::CHECKPOINT_SUB_SEQUENCE_NUMBER);
                name("#switches", a::OWNER_SWITCHES_SINCE_CHECKPOINT);
                name("#pending", a::PENDING_CHECKPOINT);
                name("#pending_sub", a::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER);
                name("#pending_state", a::PENDING_CHECKPOINT_STATE);
                values.insert(":checkpoint".to_owned(), AttributeValue::S(checkpoint.to_store_string()));
                values.insert(":zero".to_owned(), item::number(0));
                name("#window_start", a::WINDOW_START);
                name("#window_end", a::WINDOW_END);
                name("#window_state", a::WINDOW_STATE);
                // The tumbling window goes with the checkpoint, in the same write (or away).
                let (mut set, mut remove) = (String::new(), vec!["#pending", "#pending_sub", "#pending_state"]);
                match window {
                    None => remove.extend(["#window_start", "#window_end", "#window_state"]),
                    Some(w) => {
                        for (attr, value) in item::window_attributes(w) {
                            let placeholder = match attr.as_str() {
                                a::WINDOW_START => "window_start",
                                a::WINDOW_END => "window_end",
                                _ => "window_state",
                            };
                            set.push_str(&format!(", #{placeholder} = :{placeholder}"));
                            values.insert(format!(":{placeholder}"), value);
                        }
                        if w.state.is_empty() {
                            remove.push("#window_state");
                        }
                    }
                }
                // A finished checkpoint supersedes a pending one, as in Java KCL.
                format!(
                    "SET #checkpoint = :checkpoint, #sub = :zero, #switches = :zero, #counter = :next_counter{set} \
                     REMOVE {}",
                    remove.join(", ")
                )
            }
            Change::Release => "SET #counter = :next_counter REMOVE #owner".to_owned(),
        };
        let result = self
            .client
            .update_item()
            .table_name(&*self.table)
            .set_key(Some(self.key(&expected.key)))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .boxed()
            .await;
        match result {
            Ok(out) => self.applied(op, &expected.key, out.attributes),
            Err(err) => self.lost_or_error(op, &expected.key, err),
        }
    }

    fn applied(
        &self,
        op: &str,
        key: &LeaseKey,
        attributes: Option<HashMap<String, AttributeValue>>,
    ) -> Result<LeaseUpdate, LeaseStoreError> {
        match attributes {
            Some(item) => Ok(LeaseUpdate::Applied(item::from_item(&self.table, &item)?)),
            None => Err(LeaseStoreError::new(
                kcl_core::LeaseStoreErrorKind::Transient,
                format!("{op} of {key} in lease table {}: the answer carried no attributes", self.table),
            )),
        }
    }

    fn lost_or_error<E>(
        &self,
        op: &str,
        key: &LeaseKey,
        err: SdkError<E, HttpResponse>,
    ) -> Result<LeaseUpdate, LeaseStoreError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if code_of(&err) == Some("ConditionalCheckFailedException") {
            tracing::debug!(table = %self.table, lease = %key, op, "conditional write lost");
            return Ok(LeaseUpdate::Lost);
        }
        Err(lease_error(&format!("{op} of {key} in lease table {}", self.table), err))
    }
}

impl LeaseStore for DynamoLeaseStore {
    async fn list(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        let mut leases = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&*self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .boxed()
                .await
                .map_err(|e| lease_error(&format!("Scan of lease table {}", self.table), e))?;
            for item in out.items.unwrap_or_default() {
                leases.push(item::from_item(&self.table, &item)?);
            }
            match out.last_evaluated_key {
                Some(last) if !last.is_empty() => start = Some(last),
                _ => return Ok(leases),
            }
        }
    }

    async fn get(&self, key: &LeaseKey) -> Result<Option<Lease>, LeaseStoreError> {
        self.get_item(key, true).await
    }

    async fn peek(&self, key: &LeaseKey) -> Result<Option<Lease>, LeaseStoreError> {
        self.get_item(key, false).await
    }

    async fn create_if_absent(&self, lease: Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item::to_item(&lease)))
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", a::LEASE_KEY)
            .send()
            .boxed()
            .await;
        match result {
            Ok(_) => Ok(LeaseUpdate::Applied(lease)),
            Err(err) => self.lost_or_error("create", &lease.key, err),
        }
    }

    async fn renew(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        self.update("renew", expected, Change::Renew).await
    }

    async fn take(&self, expected: &Lease, new_owner: &WorkerId) -> Result<LeaseUpdate, LeaseStoreError> {
        self.update("take", expected, Change::Take(new_owner)).await
    }

    async fn checkpoint(
        &self,
        expected: &Lease,
        checkpoint: &Checkpoint,
        window: Option<&WindowState>,
    ) -> Result<LeaseUpdate, LeaseStoreError> {
        self.update("checkpoint", expected, Change::Checkpoint(checkpoint, window)).await
    }

    async fn release(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        self.update("release", expected, Change::Release).await
    }

    async fn request_handoff(
        &self,
        heartbeat: &Lease,
        from: &WorkerId,
        leases: u32,
    ) -> Result<LeaseUpdate, LeaseStoreError> {
        let Some(owner) = &heartbeat.owner else { return Ok(LeaseUpdate::Lost) };
        let result = self
            .client
            .update_item()
            .table_name(&*self.table)
            .set_key(Some(self.key(&heartbeat.key)))
            .update_expression("SET #request = :leases")
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#request", item::request_attribute(from))
            .expression_attribute_names("#owner", a::LEASE_OWNER)
            .expression_attribute_values(":leases", item::number(u64::from(leases)))
            .expression_attribute_values(":owner", AttributeValue::S(owner.as_str().to_owned()))
            .return_values(ReturnValue::AllNew)
            .send()
            .boxed()
            .await;
        match result {
            Ok(out) => self.applied("handoff request", &heartbeat.key, out.attributes),
            Err(err) => self.lost_or_error("handoff request", &heartbeat.key, err),
        }
    }

    async fn delete(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let condition = Self::guard(expected, &mut names, &mut values);
        let result = self
            .client
            .delete_item()
            .table_name(&*self.table)
            .set_key(Some(self.key(&expected.key)))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllOld)
            .send()
            .boxed()
            .await;
        match result {
            Ok(out) => self.applied("delete", &expected.key, out.attributes),
            Err(err) => self.lost_or_error("delete", &expected.key, err),
        }
    }
}
