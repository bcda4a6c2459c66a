//! The core's `LeaseStore` contract against `DynamoLeaseStore` on DynamoDB Local, each check
//! on a fresh lease table.

use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_adapter::{DynamoLeaseStore, TableOptions};
use kcl_core::testing::contract::lease_store;

async fn fresh_store() -> DynamoLeaseStore {
    let local = DynamoDbLocal::shared();
    let store = DynamoLeaseStore::new(local.dynamodb_client(), unique_name("leases"));
    store.ensure_table(&TableOptions::default()).await.unwrap_or_else(|e| panic!("ensure_table: {e}"));
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_lease_store_passes_the_lease_store_contract() {
    lease_store::run_all(fresh_store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_table_is_idempotent_and_supports_provisioned_billing() {
    let local = DynamoDbLocal::shared();
    let name = unique_name("leases-provisioned");
    let store = DynamoLeaseStore::new(local.dynamodb_client(), name.clone());
    for _ in 0..2 {
        store.ensure_table(&TableOptions::provisioned(5, 5)).await.unwrap_or_else(|e| panic!("ensure_table: {e}"));
    }
    let described = local.dynamodb_client().describe_table().table_name(&name).send().await;
    let table = described.unwrap_or_else(|e| panic!("{e:?}")).table.unwrap_or_else(|| panic!("no table"));
    let throughput = table.provisioned_throughput().and_then(|t| t.read_capacity_units());
    assert_eq!(throughput, Some(5));
}
