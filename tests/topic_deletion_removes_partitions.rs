//! Deleting a topic stops its partition groups on every node and removes
//! their data; a topic created again under the same name starts empty.

use std::time::Duration;

use strata_cluster_tests::{create_topic, eventually, fetch_all, produce, Cluster};
use strata_proto::v1 as pb;

async fn hosted(cluster: &Cluster) -> Vec<u32> {
    let mut counts = Vec::new();
    for node in &cluster.nodes {
        let mut api = cluster.api(node.id).await;
        counts.push(api.ping(pb::PingRequest {}).await.unwrap().into_inner().partitions_hosted);
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_removes_its_partitions_everywhere() {
    let cluster = Cluster::start(3).await;
    create_topic(&cluster, 1, "doomed", 2, 3, &[]).await;
    produce(&cluster, "doomed", 0, &[(None, "old-data")], Duration::from_secs(30)).await.unwrap();
    assert_eq!(hosted(&cluster).await, vec![2, 2, 2]);

    let mut api = cluster.api(2).await;
    let answer = api.delete_topic(pb::DeleteTopicRequest { name: "doomed".into() }).await.unwrap().into_inner();
    assert!(answer.error.is_none(), "{:?}", answer.error);
    eventually(Duration::from_secs(30), "every node to drop the partitions", || async {
        (hosted(&cluster).await == vec![0, 0, 0]).then_some(())
    })
    .await;
    let answer = api.delete_topic(pb::DeleteTopicRequest { name: "doomed".into() }).await.unwrap().into_inner();
    assert_eq!(answer.error.map(|e| e.name).as_deref(), Some("UNKNOWN_TOPIC"));
    for node in &cluster.nodes {
        let log = std::fs::read_to_string(&node.log_path).unwrap();
        assert_eq!(log.matches("group deleted").count(), 2, "node {} deleted both groups", node.id);
    }

    create_topic(&cluster, 3, "doomed", 2, 3, &[]).await;
    assert!(fetch_all(&cluster, "doomed", 0, 0).await.is_empty(), "the new topic does not see the old data");
}
