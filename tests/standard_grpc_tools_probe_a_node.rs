//! A node answers the standard gRPC health service (what Kubernetes gRPC
//! probes, grpcurl and load balancers ask) and server reflection (what
//! grpcurl uses without the proto files).

use strata_cluster_tests::Cluster;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answers_health_checks_and_reflection() {
    let cluster = Cluster::start(1).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.node(1).address))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut health = HealthClient::new(channel.clone());
    for service in ["", "strata.v1.Strata"] {
        let answer = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "service '{service}'");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"strata.v1.Strata".to_string()), "{names:?}");

    // The API's own descriptor is served, so grpcurl can call it.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("strata.v1.Strata".into())),
    };
    let mut answers = ServerReflectionClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.node(1).address))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
    .server_reflection_info(tokio_stream::iter([request]))
    .await
    .unwrap()
    .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    assert!(
        matches!(answer.message_response, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{answer:?}"
    );
}
