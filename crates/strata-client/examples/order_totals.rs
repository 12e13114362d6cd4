//! An exactly-once read-process-write job: reads `orders` (key: customer,
//! value: an amount as a decimal integer) as a member of group
//! `order-totals`, and writes each customer's running total to
//! `order-totals` (key: customer, value: the total so far), committing the
//! totals and the consumed offsets in one transaction every 100 ms.
//!
//! Kill it at any moment and start it again: every order is counted once.
//! The running totals are state, and the state is the output topic itself:
//! on start, and again whenever partitions are assigned or a transaction
//! is aborted, the job reads `order-totals` back (read_committed, up to its
//! end) and goes on from the last committed total of each customer. That
//! total and the committed offsets were written by the same transaction.
//!
//! ```text
//! cargo run -p strata-client --example order_totals -- 127.0.0.1:7171 [INSTANCE_ID]
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strata_client::{
    Client, GroupConsumer, GroupConsumerConfig, GroupEvent, IsolationLevel, OffsetReset, OffsetSpec, Record,
    TransactionalConfig, TransactionalProducer,
};

const INPUT: &str = "orders";
const OUTPUT: &str = "order-totals";
const GROUP: &str = "order-totals";
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The committed total of every customer, read back from the output topic.
async fn load_totals(client: &Client) -> Result<BTreeMap<String, i64>, Error> {
    let mut totals = BTreeMap::new();
    let topic = client.topic_metadata(OUTPUT).await?;
    for partition in topic.partitions.iter().map(|p| p.partition) {
        let end = client.list_offsets(OUTPUT, partition, OffsetSpec::Latest).await?.offset;
        let mut offset = client.list_offsets(OUTPUT, partition, OffsetSpec::Earliest).await?.offset;
        // Up to the end as of now: an open transaction of another instance
        // holds the reader back until it ends (at most its timeout).
        while offset < end {
            let wait = Duration::from_millis(500);
            let answer =
                client.fetch_isolated(OUTPUT, partition, offset, 1 << 20, wait, IsolationLevel::ReadCommitted).await?;
            for record in strata_client::batch::decode_records_from(&answer.records, offset)? {
                if let (Some(key), Some(value)) = (&record.key, &record.value) {
                    let total = std::str::from_utf8(value)?.parse::<i64>()?;
                    totals.insert(String::from_utf8_lossy(key).into_owned(), total);
                }
                offset = record.offset + 1;
            }
            offset = offset.max(answer.next_offset);
        }
    }
    Ok(totals)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().ok_or("usage: order_totals BOOTSTRAP [INSTANCE_ID]")?;
    let instance = args.next().unwrap_or_else(|| "order-totals-1".to_string());
    let client = Client::connect(&[bootstrap])?;
    let config = TransactionalConfig::new(&format!("{GROUP}-{instance}"));
    let mut producer = TransactionalProducer::init(client.clone(), config).await?;
    let consumer_config = GroupConsumerConfig {
        instance_id: Some(instance.clone()),
        auto_commit: false,
        auto_offset_reset: OffsetReset::Earliest,
        ..GroupConsumerConfig::default()
    };
    let mut consumer = GroupConsumer::new(client.clone(), GROUP, consumer_config);
    consumer.subscribe(&[INPUT])?;
    let mut totals = load_totals(&client).await?;
    eprintln!("order_totals {instance}: started with {} customers", totals.len());

    loop {
        producer.begin()?;
        // What this transaction read, and the totals it would commit.
        let mut next_offsets: BTreeMap<(String, u32), u64> = BTreeMap::new();
        let mut read_at_epoch = None;
        let mut pending = totals.clone();
        // Customers this transaction changed: a reload must not undo them.
        let mut touched: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let deadline = Instant::now() + COMMIT_INTERVAL;
        while Instant::now() < deadline {
            let records = consumer.poll(deadline.saturating_duration_since(Instant::now())).await?;
            if consumer.take_events().iter().any(|e| matches!(e, GroupEvent::Assigned(_))) {
                // Partitions came from another instance: take up their totals.
                for (customer, total) in load_totals(&client).await? {
                    if !touched.contains(&customer) {
                        pending.insert(customer, total);
                    }
                }
            }
            for record in records {
                let customer = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
                let amount = std::str::from_utf8(record.value.as_deref().unwrap_or_default())
                    .ok()
                    .and_then(|v| v.trim().parse::<i64>().ok());
                let Some(amount) = amount else {
                    eprintln!("skipping order at offset {}: its value is not an amount", record.offset);
                    next_offsets.insert((record.topic.clone(), record.partition), record.offset + 1);
                    continue;
                };
                touched.insert(customer.clone());
                let total = pending.entry(customer.clone()).or_insert(0);
                *total += amount;
                let out = Record {
                    key: Some(customer.into_bytes().into()),
                    value: Some(total.to_string().into_bytes().into()),
                    ..Default::default()
                };
                producer.send(OUTPUT, out).await?;
                next_offsets.insert((record.topic.clone(), record.partition), record.offset + 1);
                read_at_epoch.get_or_insert(consumer.member_epoch());
            }
        }
        let offsets: Vec<(String, u32, u64)> = next_offsets.into_iter().map(|((t, p), o)| (t, p, o)).collect();
        let committed = async {
            if let Some(epoch) = read_at_epoch {
                producer.send_offsets_for(GROUP, &consumer.member_id(), epoch, &offsets).await?;
            }
            producer.commit().await
        };
        match committed.await {
            Ok(()) => totals = pending,
            Err(error) if error.is_fatal() => return Err(error.into()),
            Err(error) => {
                eprintln!("transaction aborted, reading again from the last commit: {error}");
                producer.abort().await?;
                for (topic, partition, _) in &offsets {
                    let wanted = [(topic.clone(), [*partition].into())].into();
                    let committed = client.fetch_offsets(GROUP, &wanted).await?;
                    let offset = match committed.first().and_then(|c| c.committed.as_ref()) {
                        Some(c) => c.offset,
                        None => client.list_offsets(topic, *partition, OffsetSpec::Earliest).await?.offset,
                    };
                    consumer.seek(topic, *partition, offset);
                }
                totals = load_totals(&client).await?;
            }
        }
    }
}
