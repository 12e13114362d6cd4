//! The transaction RPCs of the client API: the wire side of the
//! coordinator (`transactions`), served on the metadata leader and
//! forwarded there like the group RPCs, and the partition side (verifying
//! a transactional produce, writing a marker, filtering fetches).

use std::collections::{BTreeMap, BTreeSet};

use strata_core::ErrorCode;
use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;
use strata_record::BatchIter;
use strata_state::txn::partition::PartitionTxns;
use strata_state::txn::{Decision, StagedOffset};
use strata_state::{Command, PartitionCommand, PartitionResponse, Response as SmResponse};
use tonic::{Request, Response, Status};

use super::{is_forwarded, StrataService};
use crate::coordinator::CoordinatorError;
use crate::error::ApiError;
use crate::transactions::describe;

type Channel = tonic::transport::Channel;

/// A producer epoch from the wire (u32 there, i16 in the batch header).
fn epoch(producer_epoch: u32) -> Result<i16, CoordinatorError> {
    i16::try_from(producer_epoch).map_err(|_| {
        CoordinatorError::Api(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("producer epoch {producer_epoch} is out of range; use the epoch InitProducerId answered"),
        ))
    })
}

/// Leaves out of a fetch answer what its reader may not see: control
/// batches (transaction markers) always, and for a read_committed reader
/// the batches of aborted transactions. Returns the bytes kept and the
/// offset past the last batch looked at (0 when there was none). The
/// bytes are returned as they came when nothing is left out.
pub(super) fn visible_batches(records: Vec<u8>, txns: &PartitionTxns, read_committed: bool, hw: u64) -> (Vec<u8>, u64) {
    let mut next = 0;
    let mut keep: Vec<(usize, usize)> = Vec::new();
    let mut dropped = false;
    let mut position = 0;
    for item in BatchIter::new(&records) {
        let Ok((header, batch)) = item else { break };
        let start = position;
        position += batch.len();
        next = header.next_offset();
        let producer = (header.producer_id >= 0).then_some(header.producer_id as u64);
        let visible = if header.is_control() {
            false
        } else if read_committed && header.is_transactional() {
            txns.visible(producer, header.base_offset, false, hw)
        } else {
            true
        };
        if visible {
            keep.push((start, position));
        } else {
            dropped = true;
        }
    }
    if !dropped {
        return (records, next);
    }
    let mut out = Vec::with_capacity(keep.iter().map(|(a, b)| b - a).sum());
    for (start, end) in keep {
        out.extend_from_slice(&records[start..end]);
    }
    (out, next)
}

impl StrataService {
    /// Before a transaction's first batch to a partition: the coordinator
    /// adds the partition to the transaction (here when this node leads
    /// the metadata group, else on the leader).
    pub(super) async fn verify_transactional_produce(
        &self,
        transactional_id: &str,
        producer_id: u64,
        producer_epoch: i16,
        topic: &str,
        partition: u32,
    ) -> Result<(), ApiError> {
        let partitions = BTreeSet::from([(topic.to_string(), partition)]);
        let local = self
            .node
            .transactions
            .add_partitions(&self.node, transactional_id, producer_id, producer_epoch, partitions)
            .await;
        let leader = match local {
            Ok(()) => return Ok(()),
            Err(CoordinatorError::Api(error)) => return Err(error),
            Err(CoordinatorError::Forward(leader)) => leader,
        };
        let request = pb::AddPartitionsToTxnRequest {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch: producer_epoch as u32,
            partitions: vec![pb::TopicPartitions { topic: topic.to_string(), partitions: vec![partition] }],
        };
        let answer = self
            .peer(leader)?
            .add_partitions_to_txn(Self::forwarded(request))
            .await
            .map_err(|status| {
                ApiError::new(ErrorCode::ClusterUnavailable, format!("metadata leader {leader}: {status}"))
            })?
            .into_inner();
        match answer.error {
            Some(error) if error.code != 0 => Err(ApiError::from_proto(&error)),
            _ => Ok(()),
        }
    }

    pub(super) async fn init_transactional_producer(
        &self,
        request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let timeout_ms = match request.transaction_timeout_ms {
            0 => strata_core::limits::DEFAULT_TRANSACTION_TIMEOUT_MS,
            ms => ms as u64,
        };
        let local = async {
            let (producer_id, producer_epoch) =
                self.node.transactions.init_producer(&self.node, &request.transactional_id, timeout_ms).await?;
            Ok(pb::InitProducerIdResponse { error: None, producer_id, producer_epoch: producer_epoch as u32 })
        };
        let forward = |mut peer: StrataClient<Channel>| {
            let request = request.clone();
            async move { peer.init_producer_id(Self::forwarded(request)).await }
        };
        self.on_coordinator(forwarded, |a: &mut pb::InitProducerIdResponse, e| a.error = e, local, forward).await
    }

    pub(super) async fn add_partitions_to_txn_inner(
        &self,
        request: Request<pb::AddPartitionsToTxnRequest>,
    ) -> Result<Response<pb::AddPartitionsToTxnResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let local = async {
            let partitions = crate::group_api::assignment_from_wire(request.partitions.clone())
                .iter()
                .map(|(topic, partition)| (topic.to_string(), partition))
                .collect();
            let producer_epoch = epoch(request.producer_epoch)?;
            self.node
                .transactions
                .add_partitions(&self.node, &request.transactional_id, request.producer_id, producer_epoch, partitions)
                .await?;
            Ok(pb::AddPartitionsToTxnResponse { error: None })
        };
        let forward = |mut peer: StrataClient<Channel>| {
            let request = request.clone();
            async move { peer.add_partitions_to_txn(Self::forwarded(request)).await }
        };
        self.on_coordinator(forwarded, |a: &mut pb::AddPartitionsToTxnResponse, e| a.error = e, local, forward).await
    }

    pub(super) async fn add_offsets_to_txn_inner(
        &self,
        request: Request<pb::AddOffsetsToTxnRequest>,
    ) -> Result<Response<pb::AddOffsetsToTxnResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let local = async {
            let mut offsets = BTreeMap::new();
            for o in &request.offsets {
                let staged = StagedOffset { offset: o.offset, metadata: o.metadata.clone() };
                if offsets.insert((o.topic.clone(), o.partition), staged).is_some() {
                    return Err(CoordinatorError::Api(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("{}/{} appears twice; send one offset per partition", o.topic, o.partition),
                    )));
                }
            }
            if offsets.is_empty() || offsets.len() > strata_core::limits::MAX_OFFSETS_PER_COMMIT {
                return Err(CoordinatorError::Api(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "{} offsets sent; send 1 to {} per call",
                        offsets.len(),
                        strata_core::limits::MAX_OFFSETS_PER_COMMIT
                    ),
                )));
            }
            self.node
                .transactions
                .add_offsets(
                    &self.node,
                    &request.transactional_id,
                    request.producer_id,
                    epoch(request.producer_epoch)?,
                    &request.group_id,
                    &request.member_id,
                    request.member_epoch,
                    offsets,
                )
                .await?;
            Ok(pb::AddOffsetsToTxnResponse { error: None })
        };
        let forward = |mut peer: StrataClient<Channel>| {
            let request = request.clone();
            async move { peer.add_offsets_to_txn(Self::forwarded(request)).await }
        };
        self.on_coordinator(forwarded, |a: &mut pb::AddOffsetsToTxnResponse, e| a.error = e, local, forward).await
    }

    pub(super) async fn end_txn_inner(
        &self,
        request: Request<pb::EndTxnRequest>,
    ) -> Result<Response<pb::EndTxnResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let local = async {
            let decision = if request.commit { Decision::Commit } else { Decision::Abort };
            let (producer_id, producer_epoch) = self
                .node
                .transactions
                .end(
                    &self.node,
                    &request.transactional_id,
                    request.producer_id,
                    epoch(request.producer_epoch)?,
                    decision,
                )
                .await?;
            Ok(pb::EndTxnResponse { error: None, producer_id, producer_epoch: producer_epoch as u32 })
        };
        let forward = |mut peer: StrataClient<Channel>| {
            let request = request.clone();
            async move { peer.end_txn(Self::forwarded(request)).await }
        };
        self.on_coordinator(forwarded, |a: &mut pb::EndTxnResponse, e| a.error = e, local, forward).await
    }

    /// Writes a marker on this partition's leader (the coordinator's call).
    pub(super) async fn write_txn_marker_inner(
        &self,
        request: pb::WriteTxnMarkerRequest,
    ) -> Result<pb::WriteTxnMarkerResponse, ApiError> {
        let producer_epoch = i16::try_from(request.producer_epoch)
            .map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "producer epoch out of range"))?;
        let (handle, topic) = self.leader_handle(&request.topic, request.partition)?;
        let what = format!("partition {}/{}", topic.name, request.partition);
        let partition_clock_ms = handle.state.borrow().as_partition().map_or(0, |p| p.clock_ms);
        let command = Command::Partition(PartitionCommand::Marker {
            producer_id: request.producer_id,
            producer_epoch,
            decision: if request.commit { Decision::Commit } else { Decision::Abort },
            coordinator_epoch: request.coordinator_epoch,
            time_ms: self.node.clock.stamp(handle.group_id, partition_clock_ms).await,
        });
        self.node.quiescence.ready_for_write(&handle).await;
        let written = handle.raft.client_write(command).await.map_err(|e| ApiError::from_write(e, &what))?;
        match written.data {
            SmResponse::Partition(PartitionResponse::MarkerWritten { .. }) => {
                Ok(pb::WriteTxnMarkerResponse { error: None })
            }
            SmResponse::Partition(PartitionResponse::Refused { code, message }) => {
                Err(ApiError::new(code, format!("{what}: {message}")))
            }
            other => Err(ApiError::internal(format!("unexpected apply result {other:?}"))),
        }
    }

    pub(super) async fn list_transactions_inner(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let local = async {
            let (transactions, now_ms) = self.node.transactions.list(&self.node).await?;
            Ok(pb::ListTransactionsResponse {
                error: None,
                transactions: transactions.iter().map(|t| describe(t, now_ms)).collect(),
            })
        };
        let forward = |mut peer: StrataClient<Channel>| async move {
            peer.list_transactions(Self::forwarded(pb::ListTransactionsRequest {})).await
        };
        self.on_coordinator(forwarded, |a: &mut pb::ListTransactionsResponse, e| a.error = e, local, forward).await
    }

    pub(super) async fn describe_transaction_inner(
        &self,
        request: Request<pb::DescribeTransactionRequest>,
    ) -> Result<Response<pb::DescribeTransactionResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let local = async {
            let (txn, now_ms) = self.node.transactions.describe(&self.node, &request.transactional_id).await?;
            Ok(pb::DescribeTransactionResponse { error: None, transaction: Some(describe(&txn, now_ms)) })
        };
        let forward = |mut peer: StrataClient<Channel>| {
            let request = request.clone();
            async move { peer.describe_transaction(Self::forwarded(request)).await }
        };
        self.on_coordinator(forwarded, |a: &mut pb::DescribeTransactionResponse, e| a.error = e, local, forward).await
    }

    pub(super) async fn abort_transaction_inner(
        &self,
        request: Request<pb::AbortTransactionRequest>,
    ) -> Result<Response<pb::AbortTransactionResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let local = async {
            let txn = self.node.transactions.abort(&self.node, &request.transactional_id).await?;
            Ok(pb::AbortTransactionResponse {
                error: None,
                transaction: Some(describe(&txn, self.node.clock.now().ms)),
            })
        };
        let forward = |mut peer: StrataClient<Channel>| {
            let request = request.clone();
            async move { peer.abort_transaction(Self::forwarded(request)).await }
        };
        self.on_coordinator(forwarded, |a: &mut pb::AbortTransactionResponse, e| a.error = e, local, forward).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_record::{encode_batch, encode_control_batch, encode_transactional_batch, ProducerFields, Record};

    fn at(mut batch: Vec<u8>, offset: u64) -> Vec<u8> {
        strata_record::set_base_offset(&mut batch, offset);
        batch
    }

    #[test]
    fn fetches_leave_out_markers_and_aborted_transactions() {
        let one = [Record { value: Some("v".into()), ..Default::default() }];
        let producer = |id| ProducerFields { producer_id: id, producer_epoch: 0, base_sequence: 0 };
        let plain = at(encode_batch(&one, ProducerFields::default()).unwrap().to_vec(), 0);
        let aborted = at(encode_transactional_batch(&one, producer(7)).unwrap().to_vec(), 1);
        let committed = at(encode_transactional_batch(&one, producer(8)).unwrap().to_vec(), 2);
        let marker7 =
            at(encode_control_batch(ProducerFields { producer_epoch: 1, ..producer(7) }, false, 1, 0).to_vec(), 3);
        let marker8 =
            at(encode_control_batch(ProducerFields { producer_epoch: 1, ..producer(8) }, true, 1, 0).to_vec(), 4);
        let mut txns = PartitionTxns::default();
        txns.on_data(7, 0, 1).unwrap();
        txns.on_data(8, 0, 2).unwrap();
        txns.on_marker(7, 1, Decision::Abort, 3).unwrap();
        txns.on_marker(8, 1, Decision::Commit, 4).unwrap();
        let all = [plain.clone(), aborted.clone(), committed.clone(), marker7, marker8].concat();
        let (kept, next) = visible_batches(all.clone(), &txns, true, 5);
        assert_eq!((kept, next), ([plain.clone(), committed.clone()].concat(), 5), "read_committed");
        let (kept, next) = visible_batches(all, &txns, false, 5);
        assert_eq!((kept, next), ([plain.clone(), aborted, committed].concat(), 5), "read_uncommitted: no markers");
        let (kept, next) = visible_batches(plain.clone(), &txns, true, 5);
        assert_eq!((kept, next), (plain, 1), "nothing to leave out");
        assert_eq!(visible_batches(Vec::new(), &txns, true, 5), (Vec::new(), 0));
    }
}
