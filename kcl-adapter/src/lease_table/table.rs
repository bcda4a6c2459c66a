//! Creating the lease table: [`DynamoLeaseStore::ensure_table`] and its [`TableOptions`].

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode as SdkBillingMode, KeySchemaElement, KeyType, ProvisionedThroughput,
    ScalarAttributeType, TableDescription, TableStatus,
};
use kcl_core::{LeaseStoreError, LeaseStoreErrorKind};

use super::DynamoLeaseStore;
use super::attribute as a;
use crate::boxed::Boxed;
use crate::error::{code_of, lease_error};

/// How long [`DynamoLeaseStore::ensure_table`] waits for the table to become ACTIVE by default.
pub const DEFAULT_ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// How often the table status is polled while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How the lease table is billed when [`DynamoLeaseStore::ensure_table`] creates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BillingMode {
    /// Pay per request (the default): no capacity to plan, no throttling from a low setting.
    OnDemand,
    /// Fixed capacity units.
    Provisioned {
        /// Read capacity units.
        read_capacity_units: u32,
        /// Write capacity units.
        write_capacity_units: u32,
    },
}

/// Options for [`DynamoLeaseStore::ensure_table`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableOptions {
    /// Billing of a newly created table. Default: [`BillingMode::OnDemand`].
    pub billing: BillingMode,
    /// How long to wait for the table to become ACTIVE. Default: [`DEFAULT_ACTIVE_TIMEOUT`].
    pub active_timeout: Duration,
}

impl Default for TableOptions {
    fn default() -> Self {
        Self { billing: BillingMode::OnDemand, active_timeout: DEFAULT_ACTIVE_TIMEOUT }
    }
}

impl TableOptions {
    /// On-demand billing (the default).
    pub fn on_demand() -> Self {
        Self::default()
    }

    /// Provisioned billing with these capacity units.
    pub fn provisioned(read_capacity_units: u32, write_capacity_units: u32) -> Self {
        Self { billing: BillingMode::Provisioned { read_capacity_units, write_capacity_units }, ..Self::default() }
    }

    /// Sets how long to wait for the table to become ACTIVE.
    pub fn with_active_timeout(mut self, timeout: Duration) -> Self {
        self.active_timeout = timeout;
        self
    }
}

impl DynamoLeaseStore {
    /// Creates the lease table unless it exists, then waits until it is ACTIVE.
    ///
    /// The table has one hash key, `leaseKey` (S), as Java KCL's. A table of that name with
    /// another key schema is an error naming the table and the expected schema
    /// ([`LeaseStoreErrorKind::Fatal`]): it belongs to something else. Safe to call from many
    /// workers at once: a table being created by another is waited for.
    pub async fn ensure_table(&self, options: &TableOptions) -> Result<(), LeaseStoreError> {
        match self.client.describe_table().table_name(self.table_name()).send().boxed().await {
            Ok(out) => {
                self.check_schema(out.table.as_ref())?;
            }
            Err(err) if code_of(&err) == Some("ResourceNotFoundException") => self.create_table(options).await?,
            Err(err) => return Err(lease_error(&format!("DescribeTable of lease table {}", self.table_name()), err)),
        }
        self.wait_active(options.active_timeout).await
    }

    /// Checks that the lease table exists with the key schema of [`ensure_table`](Self::ensure_table),
    /// without creating it: [`LeaseStoreErrorKind::TableNotFound`] when it does not exist.
    pub async fn check_table(&self) -> Result<(), LeaseStoreError> {
        match self.client.describe_table().table_name(self.table_name()).send().boxed().await {
            Ok(out) => self.check_schema(out.table.as_ref()),
            Err(err) if code_of(&err) == Some("ResourceNotFoundException") => Err(LeaseStoreError::new(
                LeaseStoreErrorKind::TableNotFound,
                format!("lease table {} does not exist", self.table_name()),
            )),
            Err(err) => Err(lease_error(&format!("DescribeTable of lease table {}", self.table_name()), err)),
        }
    }

    /// Deletes the lease table and every lease and checkpoint in it (`kcl-admin forget`).
    /// Checks first that it is a lease table (the key schema of
    /// [`ensure_table`](Self::ensure_table)), so a mistyped application name cannot delete an
    /// unrelated table; [`LeaseStoreErrorKind::TableNotFound`] when it does not exist.
    pub async fn delete_table(&self) -> Result<(), LeaseStoreError> {
        self.check_table().await?;
        match self.client.delete_table().table_name(self.table_name()).send().boxed().await {
            Ok(_) => {
                tracing::info!(table = self.table_name(), "deleted the lease table");
                Ok(())
            }
            Err(err) if code_of(&err) == Some("ResourceNotFoundException") => Err(LeaseStoreError::new(
                LeaseStoreErrorKind::TableNotFound,
                format!("lease table {} does not exist", self.table_name()),
            )),
            Err(err) => Err(lease_error(&format!("DeleteTable of lease table {}", self.table_name()), err)),
        }
    }

    async fn create_table(&self, options: &TableOptions) -> Result<(), LeaseStoreError> {
        let definition = |e: aws_sdk_dynamodb::error::BuildError| {
            LeaseStoreError::new(LeaseStoreErrorKind::Fatal, format!("building the lease table definition: {e}"))
                .with_source(e)
        };
        let key = KeySchemaElement::builder()
            .attribute_name(a::LEASE_KEY)
            .key_type(KeyType::Hash)
            .build()
            .map_err(definition)?;
        let attribute = AttributeDefinition::builder()
            .attribute_name(a::LEASE_KEY)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(definition)?;
        let mut request =
            self.client.create_table().table_name(self.table_name()).key_schema(key).attribute_definitions(attribute);
        request = match options.billing {
            BillingMode::OnDemand => request.billing_mode(SdkBillingMode::PayPerRequest),
            BillingMode::Provisioned { read_capacity_units, write_capacity_units } => {
                request.billing_mode(SdkBillingMode::Provisioned).provisioned_throughput(
                    ProvisionedThroughput::builder()
                        .read_capacity_units(i64::from(read_capacity_units))
                        .write_capacity_units(i64::from(write_capacity_units))
                        .build()
                        .map_err(definition)?,
                )
            }
        };
        match request.send().boxed().await {
            Ok(_) => {
                tracing::info!(table = self.table_name(), "created the lease table");
                Ok(())
            }
            // Another worker created it first: check what it created.
            Err(err) if code_of(&err) == Some("ResourceInUseException") => {
                let out = self.client.describe_table().table_name(self.table_name()).send().boxed().await;
                let out =
                    out.map_err(|e| lease_error(&format!("DescribeTable of lease table {}", self.table_name()), e))?;
                self.check_schema(out.table.as_ref())
            }
            Err(err) => Err(lease_error(&format!("CreateTable of lease table {}", self.table_name()), err)),
        }
    }

    /// Fails unless the table's key is exactly a string hash key `leaseKey`.
    fn check_schema(&self, table: Option<&TableDescription>) -> Result<(), LeaseStoreError> {
        let Some(table) = table else { return Ok(()) };
        let keys: Vec<String> = table
            .key_schema()
            .iter()
            .map(|k| {
                let kind = table
                    .attribute_definitions()
                    .iter()
                    .find(|d| d.attribute_name() == k.attribute_name())
                    .map_or("?", |d| d.attribute_type().as_str());
                format!("{} {} ({kind})", k.key_type().as_str(), k.attribute_name())
            })
            .collect();
        let expected = format!("{} {} ({})", KeyType::Hash.as_str(), a::LEASE_KEY, ScalarAttributeType::S.as_str());
        if keys == [expected.clone()] {
            return Ok(());
        }
        Err(LeaseStoreError::new(
            LeaseStoreErrorKind::Fatal,
            format!(
                "table {} exists with key schema [{}], but a lease table needs exactly [{expected}] (Java KCL's \
                 layout): it is not a lease table; choose another application name (the lease table's name) or \
                 delete table {}",
                self.table_name(),
                keys.join(", "),
                self.table_name()
            ),
        ))
    }

    async fn wait_active(&self, timeout: Duration) -> Result<(), LeaseStoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let out = self.client.describe_table().table_name(self.table_name()).send().boxed().await;
            let out =
                out.map_err(|e| lease_error(&format!("DescribeTable of lease table {}", self.table_name()), e))?;
            let status = out.table.as_ref().and_then(|t| t.table_status().cloned());
            match status {
                Some(TableStatus::Active) => return Ok(()),
                Some(TableStatus::Deleting) => {
                    return Err(LeaseStoreError::new(
                        LeaseStoreErrorKind::Fatal,
                        format!("lease table {} is being deleted", self.table_name()),
                    ));
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    let shown = status.as_ref().map_or("unknown", |s| s.as_str());
                    return Err(LeaseStoreError::new(
                        LeaseStoreErrorKind::Transient,
                        format!("lease table {} is not ACTIVE after {timeout:?} (status {shown})", self.table_name()),
                    ));
                }
                _ => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }
}
