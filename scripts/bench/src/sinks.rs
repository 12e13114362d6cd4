//! What the load generator (`strata-load`) needs of each system: one
//! producer's connection, which hands a record over and returns a future of
//! its acknowledgement. One [`Sink`] per system, and [`SystemSink`] to drive
//! whichever system a cluster runs from one workload runner.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::Serialize;
use strata_load::Sink;

use crate::systems::{nats_subject, rabbit_channel, rabbit_queue, Cluster, System};

/// Settings of the client side that the systems share where they apply.
#[derive(Clone, Debug, Serialize)]
pub struct ClientSettings {
    /// Strata producer linger (etcd, RabbitMQ and NATS clients send at once).
    pub linger_ms: u64,
}

pub type AckFuture = BoxFuture<'static, anyhow::Result<()>>;

/// Acknowledgements a sink still waits for, so that its `flush` waits for
/// them: the sink, and with it its connection, is dropped after `flush`,
/// and an acknowledgement still on its way would then fail.
#[derive(Clone, Default)]
struct InFlight(Arc<(AtomicUsize, tokio::sync::Notify)>);

impl InFlight {
    fn track(&self, ack: impl Future<Output = anyhow::Result<()>> + Send + 'static) -> AckFuture {
        self.0 .0.fetch_add(1, Ordering::SeqCst);
        let this = self.clone();
        async move {
            let outcome = ack.await;
            if this.0 .0.fetch_sub(1, Ordering::SeqCst) == 1 {
                this.0 .1.notify_waiters();
            }
            outcome
        }
        .boxed()
    }

    /// Completes when no acknowledgement is awaited (the caller bounds the wait).
    async fn settled(&self) {
        loop {
            // Created before the check, so a wake-up in between is not lost.
            let notified = self.0 .1.notified();
            if self.0 .0.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Strata's batching producer; partitions chosen by the producer.
pub struct StrataSink {
    producer: strata_client::Producer,
    topic: String,
}

impl StrataSink {
    pub fn connect(cluster: &Cluster, topic: &str, settings: &ClientSettings) -> anyhow::Result<StrataSink> {
        let client = strata_client::Client::connect(&cluster.endpoints)?;
        let config =
            strata_client::ProducerConfig { linger: Duration::from_millis(settings.linger_ms), ..Default::default() };
        Ok(StrataSink { producer: strata_client::Producer::new(client, config)?, topic: topic.to_string() })
    }
}

impl Sink for StrataSink {
    type Ack = AckFuture;
    type Error = anyhow::Error;

    async fn send(&self, _id: u64, value: Bytes) -> anyhow::Result<AckFuture> {
        let delivery =
            self.producer.send(&self.topic, strata_client::Record { value: Some(value), ..Default::default() }).await?;
        Ok(async move { delivery.await.map(|_| ()).map_err(anyhow::Error::from) }.boxed())
    }

    /// Sends the producer's open batches and waits for them.
    async fn flush(&self) {
        self.producer.flush().await;
    }
}

/// One etcd Put per record, under a key of the producer's own.
pub struct EtcdSink {
    kv: etcd_client::KvClient,
    prefix: String,
}

impl EtcdSink {
    pub async fn connect(cluster: &Cluster, topic: &str, index: usize) -> anyhow::Result<EtcdSink> {
        let client = etcd_client::Client::connect(&cluster.endpoints, None).await?;
        Ok(EtcdSink { kv: client.kv_client(), prefix: format!("{topic}/{index}/") })
    }
}

impl Sink for EtcdSink {
    type Ack = AckFuture;
    type Error = anyhow::Error;

    async fn send(&self, id: u64, value: Bytes) -> anyhow::Result<AckFuture> {
        let mut kv = self.kv.clone();
        let key = format!("{}{id}", self.prefix);
        // Spawned so the request starts now, not when the ack is first polled.
        let put = tokio::spawn(async move { kv.put(key, value.to_vec(), None).await });
        Ok(async move {
            put.await??;
            Ok(())
        }
        .boxed())
    }

    /// Every Put is in flight on its own: nothing is held back.
    async fn flush(&self) {}
}

/// RabbitMQ publisher confirms on quorum queues (one per partition, in turn).
pub struct RabbitSink {
    channel: lapin::Channel,
    queues: Vec<String>,
    in_flight: InFlight,
    _connection: lapin::Connection,
}

impl RabbitSink {
    pub async fn connect(cluster: &Cluster, topic: &str, partitions: u32, index: usize) -> anyhow::Result<RabbitSink> {
        let (connection, channel) = rabbit_channel(cluster, index).await?;
        channel.confirm_select(lapin::options::ConfirmSelectOptions::default()).await?;
        let queues = (0..partitions).map(|p| rabbit_queue(topic, p)).collect();
        Ok(RabbitSink { channel, queues, in_flight: InFlight::default(), _connection: connection })
    }
}

impl Sink for RabbitSink {
    type Ack = AckFuture;
    type Error = anyhow::Error;

    async fn send(&self, id: u64, value: Bytes) -> anyhow::Result<AckFuture> {
        let queue = &self.queues[(id % self.queues.len() as u64) as usize];
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                &value,
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        Ok(self.in_flight.track(async move {
            let confirmation = confirm.await?;
            anyhow::ensure!(confirmation.is_ack(), "the broker refused the message (nack)");
            Ok(())
        }))
    }

    /// Every publish is sent at once: nothing is held back, but confirms
    /// still on their way are waited for, before the connection closes.
    async fn flush(&self) {
        self.in_flight.settled().await;
    }
}

/// NATS JetStream publishes with ack futures (one stream per partition, in turn).
pub struct NatsSink {
    js: async_nats::jetstream::Context,
    subjects: Vec<String>,
    in_flight: InFlight,
}

impl NatsSink {
    pub async fn connect(cluster: &Cluster, topic: &str, partitions: u32, index: usize) -> anyhow::Result<NatsSink> {
        let endpoint = &cluster.endpoints[index % cluster.endpoints.len()];
        let client = async_nats::connect(endpoint.as_str()).await?;
        let subjects = (0..partitions).map(|p| nats_subject(topic, p)).collect();
        Ok(NatsSink { js: async_nats::jetstream::new(client), subjects, in_flight: InFlight::default() })
    }
}

impl Sink for NatsSink {
    type Ack = AckFuture;
    type Error = anyhow::Error;

    async fn send(&self, id: u64, value: Bytes) -> anyhow::Result<AckFuture> {
        let subject = self.subjects[(id % self.subjects.len() as u64) as usize].clone();
        let ack = self.js.publish(subject, value).await.map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        Ok(self.in_flight.track(async move {
            ack.await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
            Ok(())
        }))
    }

    /// Every publish is sent at once: nothing is held back, but acks still
    /// on their way are waited for, before the connection closes.
    async fn flush(&self) {
        self.in_flight.settled().await;
    }
}

/// The sink of whichever system a cluster runs.
pub enum SystemSink {
    Strata(StrataSink),
    Etcd(EtcdSink),
    Rabbit(RabbitSink),
    Nats(NatsSink),
}

impl SystemSink {
    /// Connects producer `index` (each to a different node where the client chooses).
    pub async fn connect(
        cluster: &Cluster,
        topic: &str,
        partitions: u32,
        index: usize,
        settings: &ClientSettings,
    ) -> anyhow::Result<SystemSink> {
        Ok(match cluster.system {
            System::Strata => SystemSink::Strata(StrataSink::connect(cluster, topic, settings)?),
            System::Etcd => SystemSink::Etcd(EtcdSink::connect(cluster, topic, index).await?),
            System::Rabbitmq => SystemSink::Rabbit(RabbitSink::connect(cluster, topic, partitions, index).await?),
            System::Nats => SystemSink::Nats(NatsSink::connect(cluster, topic, partitions, index).await?),
        })
    }
}

impl Sink for SystemSink {
    type Ack = AckFuture;
    type Error = anyhow::Error;

    async fn send(&self, id: u64, value: Bytes) -> anyhow::Result<AckFuture> {
        match self {
            SystemSink::Strata(sink) => sink.send(id, value).await,
            SystemSink::Etcd(sink) => sink.send(id, value).await,
            SystemSink::Rabbit(sink) => sink.send(id, value).await,
            SystemSink::Nats(sink) => sink.send(id, value).await,
        }
    }

    async fn flush(&self) {
        match self {
            SystemSink::Strata(sink) => sink.flush().await,
            SystemSink::Etcd(sink) => sink.flush().await,
            SystemSink::Rabbit(sink) => sink.flush().await,
            SystemSink::Nats(sink) => sink.flush().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flush_waits_for_acknowledgements_still_on_their_way() {
        let in_flight = InFlight::default();
        in_flight.settled().await;
        let (answer, answered) = tokio::sync::oneshot::channel::<()>();
        let ack = in_flight.track(async move {
            answered.await?;
            Ok(())
        });
        let waiting = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.settled().await }
        });
        let acked = tokio::spawn(ack);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "settled while an acknowledgement was awaited");
        answer.send(()).expect("the ack waits");
        acked.await.expect("ack task").expect("acknowledged");
        tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("settled").expect("task");
    }
}
