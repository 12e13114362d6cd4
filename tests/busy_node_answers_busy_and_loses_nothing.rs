//! A node bounds the produce bytes it holds per connection and in total:
//! past the bound it answers BUSY with a retry-after hint instead of
//! queueing, and a producer that meets BUSY backs off and still delivers
//! every record exactly once.

use std::time::Duration;

use strata_client::{Client, Producer, ProducerConfig, Record};
use strata_cluster_tests::{create_topic, eventually, fetch_all, now_ms, Cluster};
use strata_proto::v1 as pb;
use strata_record::{encode_batch, ProducerFields};

/// A batch of one record of `size` bytes.
fn big_batch(size: usize) -> bytes::Bytes {
    // Stamped now: retention would drop a batch from 1970 at once.
    let record = Record { value: Some(vec![b'x'; size].into()), timestamp_ms: now_ms(), ..Default::default() };
    encode_batch(&[record], ProducerFields::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_node_answers_busy_and_the_producer_backs_off() {
    // One batch per connection, two per node, and every answer held 300 ms
    // so that requests overlap.
    let cluster = Cluster::start_with_config(
        3,
        "max_produce_bytes_in_flight = \"2MiB\"\nmax_produce_bytes_in_flight_per_connection = \"1MiB\"\n\
         [faults]\ndelay_produce_answer_every = 1\ndelay_produce_answer_ms = 300\n",
    )
    .await;
    let leader = create_topic(&cluster, 1, "bulk", 1, 3, &[]).await[0];

    // Two 700 KB batches at once on one connection: the second does not fit.
    let busy = eventually(Duration::from_secs(30), "a BUSY answer", || async {
        let api = cluster.api(leader).await;
        let send = |mut api: pb::strata_client::StrataClient<tonic::transport::Channel>| async move {
            let request = pb::ProduceRequest {
                topic: "bulk".into(),
                partition: 0,
                batch: big_batch(700_000),
                acks: 1,
                timeout_ms: 10_000,
                ..Default::default()
            };
            api.produce(request).await.map(|a| a.into_inner())
        };
        let (a, b) = tokio::join!(send(api.clone()), send(api));
        [a, b].into_iter().filter_map(Result::ok).filter_map(|answer| answer.error).find(|e| e.name == "BUSY")
    })
    .await;
    assert_eq!(busy.retry, pb::RetryClass::BackOff as i32);
    assert!(busy.retry_after_ms > 0, "BUSY carries a retry-after hint");
    assert!(busy.message.contains("bound"), "{}", busy.message);

    // A producer pushing more than the bounds: every record arrives once.
    let before = fetch_all(&cluster, "bulk", 0, 0).await.len();
    let producer = Producer::new(
        Client::connect(&cluster.bootstrap()).unwrap(),
        ProducerConfig { max_batch_bytes: 1024 * 1024, ..Default::default() },
    )
    .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..24 {
        let mut value = format!("{i:04}").into_bytes();
        value.resize(400_000, b'y');
        let record = Record { value: Some(value.into()), ..Default::default() };
        deliveries.push(producer.send_to("bulk", 0, record).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    let records = fetch_all(&cluster, "bulk", 0, 0).await;
    let mut seen: Vec<String> = records[before..]
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value.as_ref().unwrap()[..4]).into_owned())
        .collect();
    assert_eq!(seen.len(), 24, "every record once");
    seen.dedup();
    assert_eq!(seen, (0..24).map(|i| format!("{i:04}")).collect::<Vec<_>>(), "in order");
}
