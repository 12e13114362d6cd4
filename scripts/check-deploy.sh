#!/usr/bin/env bash
# Checks the files of deploy/ on this machine, each step bounded in time:
#   1. the Kubernetes manifests against the Kubernetes JSON schemas, offline
#      (kubernetes-validate, pinned in deploy/kubernetes/validate-requirements.txt,
#      in a virtualenv under ~/.cache), and against each other (node ids,
#      names, initial_cluster, probes);
#   2. the systemd unit with `systemd-analyze verify` (any warning fails),
#      and deploy/systemd/install.sh into a temporary root (and --dry-run);
#   3. the compose file's syntax;
#   4. with a Docker engine: builds strata:latest with
#      deploy/docker/build-image.sh, starts deploy/compose.yaml as project
#      strata-check, waits for three healthy nodes, checks that every node
#      advertises its published port, produces and consumes records FROM
#      THE HOST through the published ports on a topic of RF 3 and on one
#      with a partition led by every node (any record missing fails),
#      checks the node runs as a non-root user, that
#      a clean stop exits 0, that the health check fails on a node without a
#      quorum, and that the records survive new containers on the same
#      volumes; then removes the containers, network and volumes.
# Exits non-zero with a message naming the failed step. About 25 s once the
# binary, the validator and the base image exist; the first run adds about
# a minute (the validator's install and debootstrap).
#
# The image is built from STRATA_BIN when set, else from the debug binary of
# the test build ($CARGO_TARGET_DIR, default ~/.cache/strata-target), else
# from a release build (about 15 minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
source scripts/lib/compose.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
venv="${STRATA_DEPLOY_VENV:-$HOME/.cache/strata-deploy-venv}"
project=strata-check
compose_file=deploy/compose.yaml
# The Kubernetes versions the manifests must be valid for: the oldest with
# gRPC probes generally available, and the newest the validator ships.
k8s_versions=(1.27.0 1.37.0)

start=$SECONDS
step() { echo "==> [$((SECONDS - start))s] $*"; }
fail() {
  echo "check-deploy: FAILED: $*" >&2
  exit 1
}

work="$(mktemp -d -t strata-check-deploy.XXXXXX)"
compose=()
compose_up=false
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if $compose_up; then
    compose_teardown check-deploy "$project" "$rc" "$work/down.log" || rc=1
  fi
  rm -rf "$work"
  if [ "$rc" -eq 0 ]; then
    echo "check-deploy: all checks passed in $((SECONDS - start)) s"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- Kubernetes
requirements=deploy/kubernetes/validate-requirements.txt
wanted="$(grep -v '^#' "$requirements" | sort -f)"
have="$("$venv/bin/pip" freeze 2>/dev/null | sort -f || true)"
if [ "$have" != "$wanted" ]; then
  step "kubernetes: installing the pinned validator in $venv"
  rm -rf "$venv"
  timeout 120 python3 -m venv "$venv" || fail "could not make a virtualenv with python3 -m venv"
  # Bound: about 10 s here (the package is ~100 MB of schemas); 5 minutes
  # allows a slow download.
  timeout 300 "$venv/bin/pip" install --quiet -r "$requirements" \
    || fail "could not install $requirements"
fi

# The validation itself needs no network: run it without one when this
# user may make a network namespace (root), which proves it.
offline=()
if unshare -n true 2>/dev/null; then
  offline=(unshare -n)
fi
for version in "${k8s_versions[@]}"; do
  step "kubernetes: schema validation against $version${offline:+ (no network)}"
  timeout 120 "${offline[@]}" "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" deploy/kubernetes/*.yaml \
    || fail "deploy/kubernetes does not validate against Kubernetes $version (see above)"
done

step "kubernetes: consistency of the manifests (ids, names, initial_cluster, probes)"
timeout 60 "$venv/bin/python" - "$repo" <<'PY' || fail "the Kubernetes manifests do not fit together (see above)"
import glob, os, re, subprocess, sys, tomllib, yaml

repo = sys.argv[1]
docs = []
for path in sorted(glob.glob(os.path.join(repo, "deploy/kubernetes/*.yaml"))):
    with open(path) as f:
        docs += [d for d in yaml.safe_load_all(f) if d]
def one(kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]

sts = one("StatefulSet")
ns = sts["metadata"]["namespace"]
replicas, service = sts["spec"]["replicas"], sts["spec"]["serviceName"]
for d in docs:
    if d["kind"] != "Namespace":
        assert d["metadata"].get("namespace") == ns, f"{d['kind']} {d['metadata']['name']} is not in namespace {ns}"
one("Namespace", ns)
assert sts["spec"]["podManagementPolicy"] == "Parallel", "pods must start together: one alone is never ready"

headless = one("Service", service)
assert headless["spec"]["clusterIP"] == "None", f"{service} must be headless"
assert headless["spec"].get("publishNotReadyAddresses") is True, \
    f"{service} must publish pods before they are ready (they find each other by name to become ready)"
labels = sts["spec"]["template"]["metadata"]["labels"]
for d in docs:
    selector = d["spec"].get("selector") if d["kind"] in ("Service", "PodDisruptionBudget", "StatefulSet") else None
    if selector is not None:
        selector = selector.get("matchLabels", selector)
        assert all(labels.get(k) == v for k, v in selector.items()), f"{d['kind']} {d['metadata']['name']} selects no strata pod"
pdb = one("PodDisruptionBudget")
assert pdb["spec"]["maxUnavailable"] == 1, "one pod at a time"

pod = sts["spec"]["template"]["spec"]
[container] = pod["containers"]
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
config_map_name = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
config_mount = next(m for m in container["volumeMounts"] if m["name"] == next(v["name"] for v in pod["volumes"] if "configMap" in v))
assert config_mount["mountPath"] == "/etc/strata", "the image reads /etc/strata/strata.toml"
data_mount = next(m for m in container["volumeMounts"] if m["name"] == sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"])
assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"] is True

config = tomllib.loads(one("ConfigMap", config_map_name)["data"]["strata.toml"])
# Every key of the shipped example (set or shown commented out) is a key the server knows.
known = set()
with open(os.path.join(repo, "deploy/strata.toml")) as f:
    for line in f:
        m = re.match(r"^#?\s*([a-z_]+) = ", line)
        if m:
            known.add(m.group(1))
unknown = set(config) - known
assert not unknown, f"the ConfigMap's strata.toml has keys the server refuses: {unknown}"
assert "node_id" not in config, "node_id comes from the pod ordinal, not the shared file"
assert config["data_dir"] == data_mount["mountPath"], "data_dir must be the volume claim's mount"
assert config["listen"] == f"0.0.0.0:{ports['grpc']}", "listen on every interface, on the grpc port"
assert config["metrics_listen"] == f"0.0.0.0:{ports['metrics']}"
expected = ",".join(f"{i + 1}={sts['metadata']['name']}-{i}.{service}.{ns}.svc:{ports['grpc']}" for i in range(replicas))
assert config["initial_cluster"] == expected, f"initial_cluster is {config['initial_cluster']!r}, want {expected!r}"

for probe in ("startupProbe", "livenessProbe"):
    assert container[probe]["grpc"]["port"] == ports["grpc"], f"{probe} must ask the node's gRPC health service"
ready = container["readinessProbe"]["exec"]["command"]
assert ready[-2:] == ["cluster", "status"] and f"127.0.0.1:{ports['grpc']}" in ready, "readiness asks this node for the cluster status"

# The command that turns the pod's ordinal into a node id, as the kubelet
# runs it: $$ becomes $, and a stand-in prints what strata would get.
command = [part.replace("$$", "$") for part in container["command"]]
command = [part.replace("exec /usr/local/bin/strata", "exec echo") for part in command]
# Pods past the initial ones join through them, with an empty initial_cluster.
seeds = ",".join(f"{sts['metadata']['name']}-{i}.{service}.{ns}.svc:{ports['grpc']}" for i in range(replicas))
joiner = f"server --node-id 13 --initial-cluster  --join {seeds} --peer-address strata-12.{service}.{ns}.svc:{ports['grpc']}"
for pod_name, want in [("strata-0", "server --node-id 1"), ("strata-2", "server --node-id 3"), ("strata-12", joiner)]:
    out = subprocess.run(command, env={"POD_NAME": pod_name, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == want, f"pod {pod_name}: {out.stdout!r} {out.stderr!r}, want {want!r}"
bad = subprocess.run(command, env={"POD_NAME": "strata", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
assert bad.returncode != 0, "a pod name without an ordinal must be refused"
print(f"  {replicas} pods, node ids 1..{replicas}, initial_cluster {expected}")
PY

# ------------------------------------------------------------------- systemd
if ! command -v systemd-analyze >/dev/null 2>&1; then
  step "systemd: installing systemd-analyze (the systemd package)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  timeout 300 $sudo apt-get update -qq || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive timeout 600 $sudo apt-get install -y -qq systemd >/dev/null \
    || fail "could not install the systemd package"
fi

step "systemd: install.sh into a temporary root"
root="$work/root"
stand_in="$CARGO_TARGET_DIR/debug/strata"
[ -x "$stand_in" ] || stand_in=/bin/true # only the file's place and mode are checked here
timeout 60 deploy/systemd/install.sh --binary "$stand_in" --destdir "$root" >"$work/install.log" 2>&1 \
  || { cat "$work/install.log" >&2; fail "install.sh into $root failed"; }
for entry in "0755 usr/local/bin/strata" "0644 etc/systemd/system/strata.service" \
  "0640 etc/strata/strata.toml" "0750 var/lib/strata"; do
  mode="${entry%% *}" path="$root/${entry#* }"
  [ -e "$path" ] || fail "install.sh did not make $path"
  actual="$(stat -c %04a "$path")"
  [ "$actual" = "$mode" ] || fail "$path has mode $actual, want $mode"
done
cmp -s deploy/strata.toml "$root/etc/strata/strata.toml" || fail "the installed config is not deploy/strata.toml"
grep -qx 'ExecStart=/usr/local/bin/strata server --config /etc/strata/strata.toml' "$root/etc/systemd/system/strata.service" \
  || fail "the installed unit does not start the installed binary"
# Again, with an edited config: it must be kept.
echo "# edited" >>"$root/etc/strata/strata.toml"
timeout 60 deploy/systemd/install.sh --binary "$stand_in" --destdir "$root" --prefix /opt/strata >"$work/install.log" 2>&1 \
  || { cat "$work/install.log" >&2; fail "install.sh run a second time failed"; }
tail -n 1 "$root/etc/strata/strata.toml" | grep -qx '# edited' || fail "a second install.sh overwrote an edited config"
[ -x "$root/opt/strata/bin/strata" ] || fail "--prefix /opt/strata did not install the binary in /opt/strata/bin"
grep -qx 'ExecStart=/opt/strata/bin/strata server --config /etc/strata/strata.toml' "$root/etc/systemd/system/strata.service" \
  || fail "--prefix did not point the unit at /opt/strata/bin/strata"
dry="$work/dry-root"
mkdir "$dry"
timeout 60 deploy/systemd/install.sh --binary "$stand_in" --destdir "$dry" --dry-run >"$work/install.log" 2>&1 \
  || { cat "$work/install.log" >&2; fail "install.sh --dry-run failed"; }
[ -z "$(ls -A "$dry")" ] || fail "install.sh --dry-run wrote files: $(find "$dry" | head -5)"

step "systemd: systemd-analyze verify deploy/systemd/strata.service"
# The unit as install.sh writes it, pointing at the binary in the
# temporary root (verify checks that ExecStart exists). Any message is a
# failure: verify exits 0 on unknown keys and bad values, printing a warning.
mkdir "$work/unit"
sed "s|^ExecStart=/opt/strata/bin/strata |ExecStart=$root/opt/strata/bin/strata |" \
  "$root/etc/systemd/system/strata.service" >"$work/unit/strata.service"
grep -q "^ExecStart=$root/" "$work/unit/strata.service" || fail "could not point the unit at the staged binary"
verify_rc=0
timeout 60 systemd-analyze verify --man=no "$work/unit/strata.service" >"$work/verify.log" 2>&1 || verify_rc=$?
if [ "$verify_rc" -ne 0 ] || [ -s "$work/verify.log" ]; then
  cat "$work/verify.log" >&2
  fail "systemd-analyze verify found problems in deploy/systemd/strata.service (exit $verify_rc)"
fi

# ------------------------------------------------------------------- compose
pick_compose "$compose_file" "$project" || fail "neither docker-compose nor docker compose is installed"
step "compose: syntax of $compose_file (${compose[0]})"
timeout 60 "${compose[@]}" config -q || fail "$compose_file is not valid"
timeout 60 "${compose[@]}" --profile five --profile grow --profile prometheus config -q \
  || fail "$compose_file is not valid with its profiles"

# -------------------------------------------------------------------- docker
if ! timeout 30 docker info >/dev/null 2>&1; then
  echo "check-deploy: no Docker engine answers: skipping the image and compose checks"
  exit 0
fi

build_strata_image || fail "build-image.sh failed"

for port in 7171 7172 7173; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "127.0.0.1:$port is in use (a strata dev cluster?): compose.yaml publishes nodes 1-3 there"
  fi
done

step "compose: up -d (project $project)"
# A run interrupted before its cleanup may have left the project behind.
timeout 120 "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
compose_up=true
timeout 120 "${compose[@]}" up -d || fail "docker-compose up failed"

# Waits (polling, with a deadline) until every service named is healthy;
# fails at once when one of them stopped.
wait_healthy() {
  local deadline=$((SECONDS + $1)) service id state health pending
  shift
  while :; do
    pending=()
    for service in "$@"; do
      id="$(container "$service")"
      state="$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")"
      health="${state#* }"
      case "$state" in
        running\ healthy) ;;
        running\ starting | running\ unhealthy) pending+=("$service:$health") ;;
        *) fail "$service is '$state', not running (health check: $health)" ;;
      esac
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    [ "$SECONDS" -lt "$deadline" ] || fail "not healthy in time: ${pending[*]}"
    sleep 1 # poll interval
  done
}
step "compose: waiting for strata-1..3 to be healthy"
# Bound: the cluster forms within seconds of a majority running and the
# health check runs every 3 s; 90 s is far past that.
wait_healthy 90 strata-1 strata-2 strata-3
node1="$(container strata-1)"
node() { timeout 60 docker exec -i "$node1" strata "$@"; }

# The image's health check and the compose file's are the command that the
# lifecycle step below shows failing on a node without a quorum.
want_test='["CMD","/usr/local/bin/strata","--bootstrap","127.0.0.1:7171","cluster","status"]'
health_test="$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' strata:latest)"
[ "$health_test" = "$want_test" ] || fail "unexpected health check in the image: $health_test"
health_test="$(docker inspect -f '{{json .Config.Healthcheck.Test}}' "$node1")"
[ "$health_test" = "$want_test" ] || fail "unexpected health check on strata-1: $health_test"

step "host: every node advertises its published port"
# The image's own strata binary, run on the host as a client outside the
# compose network, so the client matches the nodes.
host_bin="$work/strata"
copy_image_strata "$host_bin" || fail "could not copy the strata binary out of strata:latest"
host() { timeout 60 "$host_bin" --bootstrap 127.0.0.1:7171 "$@"; }
# Each node registers its address through the metadata group once the
# cluster has formed: poll until every node shows it, with a deadline.
deadline=$((SECONDS + 30))
while :; do
  host --json cluster status >"$work/host-status.json" 2>"$work/host-status.err" || true
  missing=()
  for n in 1 2 3; do
    grep -q "\"id\":$n,\"address\":\"127.0.0.1:717$n\"" "$work/host-status.json" || missing+=("node $n")
  done
  [ ${#missing[@]} -eq 0 ] && break
  [ "$SECONDS" -lt "$deadline" ] \
    || fail "not advertised at 127.0.0.1:717N within 30 s: ${missing[*]}: $(cat "$work/host-status.json" "$work/host-status.err")"
  sleep 1 # poll interval
done

step "host: produce and consume through the published ports, a partition led by every node"
# Two topics of 3 partitions: deploy-check of RF 3, led as elected (fresh
# partitions lean to the nodes with the higher ids), and deploy-check-spread
# of RF 1, one partition on each node, so that every node leads one and the
# host client must reach each node through its own published port.
topics=(deploy-check deploy-check-spread)
declare -A replication=([deploy-check]=3 [deploy-check-spread]=1)
for topic in "${topics[@]}"; do
  host topic create "$topic" --partitions 3 --replication-factor "${replication[$topic]}" >/dev/null \
    || fail "topic create $topic failed"
  # Leaders are elected within about a second of the create.
  deadline=$((SECONDS + 30))
  while :; do
    host --json topic describe "$topic" >"$work/describe.json" || fail "topic describe $topic failed"
    grep -q '"leader":null' "$work/describe.json" || break
    [ "$SECONDS" -lt "$deadline" ] || fail "topic $topic has partitions without a leader after 30 s"
    sleep 1 # poll interval
  done
  leaders="$(grep -o '"leader":[0-9]*' "$work/describe.json" | cut -d: -f2 | tr '\n' ' ')"
  echo "  $topic: partitions 0 1 2 led by nodes $leaders"
  if [ "$topic" = deploy-check-spread ]; then
    distinct="$(grep -o '"leader":[0-9]*' "$work/describe.json" | cut -d: -f2 | sort -u | tr '\n' ' ')"
    [ "$distinct" = "1 2 3 " ] || fail "$topic is not led by one node per partition: $leaders"
  fi
  : >"$work/expected-$topic"
  for partition in 0 1 2; do
    for i in $(seq 1 4); do echo "$topic-p$partition-value-$i"; done >"$work/input"
    cat "$work/input" >>"$work/expected-$topic"
    host produce "$topic" --partition "$partition" <"$work/input" >"$work/produce.out" 2>&1 \
      || { cat "$work/produce.out" >&2; fail "produce to $topic/$partition from the host failed"; }
  done
  sort -o "$work/expected-$topic" "$work/expected-$topic"
done
consume_check() {
  local topic
  for topic in "${topics[@]}"; do
    host consume "$topic" --from-beginning --until-end >"$work/consumed" || fail "consume $topic from the host failed ($1)"
    sort "$work/consumed" | diff -u "$work/expected-$topic" - >&2 \
      || fail "records of $topic consumed from the host differ from the produced ones ($1)"
  done
}
consume_check "first read"
# Admin commands work inside the network too (any node answers them).
node topic describe deploy-check-spread | sed 's/^/  /'

step "security: the node runs as a non-root user"
uid_line="$(docker exec "$node1" grep '^Uid:' /proc/1/status)"
read -r _ real effective saved fs <<<"$uid_line"
[ "$real $effective $saved $fs" = "10001 10001 10001 10001" ] || fail "strata-1's server runs with '$uid_line', want uid 10001"
[ "$(docker exec "$node1" stat -c %u /var/lib/strata)" = 10001 ] || fail "the data volume is not owned by uid 10001"
[ "$(docker inspect -f '{{.Config.User}}' "$node1")" = 10001:10001 ] || fail "the container's user is not 10001:10001"

step "lifecycle: a clean stop exits 0"
# Bound: SIGTERM, then up to stop_grace_period (30 s) before SIGKILL.
timeout 120 "${compose[@]}" stop >/dev/null 2>&1 || fail "docker-compose stop failed"
for service in strata-1 strata-2 strata-3; do
  code="$(docker inspect -f '{{.State.ExitCode}}' "$(container "$service")")"
  [ "$code" = 0 ] || fail "$service exited with $code on SIGTERM, want 0"
done

step "lifecycle: new containers on the same volumes; node 1 alone is unhealthy"
timeout 120 "${compose[@]}" down >/dev/null 2>&1 || fail "docker-compose down (keeping volumes) failed"
timeout 120 "${compose[@]}" up -d strata-1 >/dev/null 2>&1 || fail "docker-compose up strata-1 failed"
node1="$(container strata-1)"
# The health check's command must fail while the node answers but has no
# quorum: poll until the node answers (JSON printed), with a deadline.
deadline=$((SECONDS + 60))
while :; do
  rc=0
  timeout 30 docker exec "$node1" strata --bootstrap 127.0.0.1:7171 --json cluster status >"$work/status.json" 2>"$work/status.err" || rc=$?
  if [ -s "$work/status.json" ]; then break; fi
  [ "$SECONDS" -lt "$deadline" ] || { cat "$work/status.err" >&2; fail "strata-1 did not answer within 60 s"; }
  sleep 1 # poll interval
done
grep -q '"metadata_available":false' "$work/status.json" || fail "strata-1 alone reports an available cluster: $(cat "$work/status.json")"
[ "$rc" -ne 0 ] || fail "the health check command exits 0 on a node without a quorum"
echo "  alone: exit $rc, $(head -c 160 "$work/status.json")..."

step "lifecycle: all three again, healthy, records still there"
timeout 120 "${compose[@]}" up -d >/dev/null 2>&1 || fail "docker-compose up failed"
wait_healthy 90 strata-1 strata-2 strata-3
node1="$(container strata-1)"
consume_check "after new containers on the same volumes"
