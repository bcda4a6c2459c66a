//! The README's example, complete: prints every change of the `orders` table (or the table
//! named by `ORDERS_TABLE`) until SIGTERM or SIGINT. Runs in CI against DynamoDB Local
//! (`examples/tests/readme_example.rs`); against AWS, `cargo run -p kcl-examples --bin audit`
//! with the usual AWS environment.

// README example begins
use kcl_adapter::{ChangeRecord, WorkerBuilder};
use kcl_core::{Batch, Checkpointer, ProcessorError, RecordProcessor, ShardId};

#[derive(serde::Deserialize)]
struct Order {
    id: String,
    total: u64,
}

struct Audit;

impl RecordProcessor<ChangeRecord> for Audit {
    async fn process_records(
        &mut self,
        batch: &Batch<ChangeRecord>,
        _: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        for record in &batch.records {
            let order: Option<Order> = record.new_image_as().map_err(|e| ProcessorError::new(e.to_string()))?;
            println!("{} {:?}", record.event_name().as_str(), order.map(|o| (o.id, o.total)));
        }
        Ok(()) // done: the worker checkpoints it (at most every 5 s, and when it stops)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let table = std::env::var("ORDERS_TABLE").unwrap_or_else(|_| "orders".to_owned());
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let worker = WorkerBuilder::new(&sdk, "orders-audit").table(table).create_lease_table().stop_on_signals();
    worker.start(|_: &ShardId| Audit).await?.wait().await?;
    Ok(())
}
// README example ends
