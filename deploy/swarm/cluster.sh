#!/usr/bin/env bash
# A two-node Docker Swarm on this one machine, running deploy/swarm/stack.yml:
#   deploy/swarm/cluster.sh up       (make cluster-up)     start both engines, form the swarm, deploy the stack
#   deploy/swarm/cluster.sh down     (make cluster-down)   remove everything it made: processes, bridges,
#                                                          iptables chains, the network namespace, the veth pair
#   deploy/swarm/cluster.sh env      print the DOCKER_HOST of each node
# Node 1 (the manager) is a dockerd on a private socket; node 2 is a second dockerd in its own network
# namespace, linked to node 1 by a veth pair (10.250.0.1 <-> 10.250.0.2). Neither touches a Docker engine the
# machine may already run. Images come from podman (no registry): `podman save | docker load`.
# Needs root and Debian's docker.io, haproxy, iproute2 (installed with apt-get when missing).
# Environment: CLUSTER_DIR (default <project>/.cluster), IMAGE (default localhost/modelserver:cpu),
#   BALANCER_PORT (default 18080), BALANCER_GRPC_PORT (default 18081), BALANCER_STATS_PORT (default 18404).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
W=${CLUSTER_DIR:-$root/.cluster}
IMAGE=${IMAGE:-localhost/modelserver:cpu}
BALANCER_IMAGE=localhost/modelserver-balancer:haproxy
NETNS=ms-node2
VETH1=ms-veth1
VETH2=ms-veth2
ADDR1=10.250.0.1
ADDR2=10.250.0.2
STACK=modelserver
export BALANCER_PORT=${BALANCER_PORT:-18080} BALANCER_GRPC_PORT=${BALANCER_GRPC_PORT:-18081} BALANCER_STATS_PORT=${BALANCER_STATS_PORT:-18404}
# podman's settings as the Makefile sets them (images in the project's .containers/); empty = podman's defaults.
export CONTAINERS_CONF=${CONTAINERS_CONF-$root/deploy/container/containers.conf}
export CONTAINERS_STORAGE_CONF=${CONTAINERS_STORAGE_CONF-$root/.containers/storage.conf}

d1() { docker -H "unix://$W/d1.sock" "$@"; }
d2() { docker -H "unix://$W/d2.sock" "$@"; }
log() { echo "[cluster] $*"; }

install_tools() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v nsenter >/dev/null || missing+=(util-linux)
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" = 0 ] || { echo "cluster.sh: needs root and ${missing[*]} (apt-get install ${missing[*]})" >&2; exit 1; }
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$((seconds * 2))"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "cluster.sh: timed out waiting for $what" >&2
  return 1
}

start_engines() {
  mkdir -p "$W"
  log "node 1: dockerd on $W/d1.sock"
  dockerd --data-root "$W/d1" --exec-root "$W/x1" -H "unix://$W/d1.sock" --pidfile "$W/d1.pid" \
    --bip 172.31.240.1/24 --log-level warn > "$W/d1.log" 2>&1 &
  log "node 2: network namespace $NETNS, veth $VETH1 ($ADDR1) <-> $VETH2 ($ADDR2)"
  ip netns add "$NETNS"
  ip link add "$VETH1" type veth peer name "$VETH2"
  ip link set "$VETH2" netns "$NETNS"
  ip addr add "$ADDR1/24" dev "$VETH1" && ip link set "$VETH1" up
  ip netns exec "$NETNS" ip addr add "$ADDR2/24" dev "$VETH2"
  ip netns exec "$NETNS" ip link set "$VETH2" up
  ip netns exec "$NETNS" ip link set lo up
  log "node 2: dockerd on $W/d2.sock inside $NETNS"
  nsenter --net="/run/netns/$NETNS" dockerd --data-root "$W/d2" --exec-root "$W/x2" -H "unix://$W/d2.sock" \
    --pidfile "$W/d2.pid" --bip 172.31.250.1/24 --log-level warn > "$W/d2.log" 2>&1 &
  wait_for 60 "node 1's engine" d1 info
  wait_for 60 "node 2's engine" d2 info
}

form_swarm() {
  log "swarm: manager on $ADDR1, worker on $ADDR2"
  d1 swarm init --advertise-addr "$ADDR1" --listen-addr "$ADDR1:2377" >/dev/null
  d2 swarm join --token "$(d1 swarm join-token -q worker)" --advertise-addr "$ADDR2" --listen-addr "$ADDR2:2377" \
    "$ADDR1:2377" >/dev/null
  wait_for 60 "two ready nodes" sh -c "[ \$(docker -H unix://$W/d1.sock node ls --format '{{.Status}}' | grep -c Ready) = 2 ]"
}

load_images() {
  local engine
  engine=$("$root/deploy/container/engine.sh")
  log "images: $IMAGE from $engine into both nodes"
  "$engine" save "$IMAGE" | d1 load -q
  "$engine" save "$IMAGE" | d2 load -q
  log "balancer image: Debian's haproxy and the libraries it links, nothing else"
  local rootfs="$W/balancer-rootfs"
  rm -rf "$rootfs" && mkdir -p "$rootfs/usr/sbin" "$rootfs/etc/haproxy" "$rootfs/etc" "$rootfs/tmp"
  cp "$(command -v haproxy)" "$rootfs/usr/sbin/haproxy"
  ldd "$(command -v haproxy)" | grep -o '/[^ ]*' | while read -r library; do cp --parents -L "$library" "$rootfs"; done
  cp "$here/haproxy.cfg" "$rootfs/etc/haproxy/haproxy.cfg"
  printf 'root:x:0:0::/:/bin/false\nnobody:x:99:99::/:/bin/false\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\nnobody:x:99:\n' > "$rootfs/etc/group"
  tar -C "$rootfs" -c . | d1 import \
    --change 'ENTRYPOINT ["/usr/sbin/haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]' - "$BALANCER_IMAGE" >/dev/null
}

deploy_stack() {
  log "stack: $STACK ($IMAGE, 4 replicas) and its balancer on 127.0.0.1:$BALANCER_PORT"
  MODELSERVER_IMAGE=$IMAGE BALANCER_IMAGE=$BALANCER_IMAGE d1 stack deploy --resolve-image never -c "$here/stack.yml" "$STACK" >/dev/null
  wait_for 240 "4 healthy replicas" sh -c "[ \$(docker -H unix://$W/d1.sock ps --filter health=healthy -q | wc -l) -ge 1 ] && \
    [ \$(docker -H unix://$W/d1.sock service ls --filter name=${STACK}_modelserver --format '{{.Replicas}}') = 4/4 ]"
  wait_for 120 "the balancer" curl -sf "http://127.0.0.1:$BALANCER_PORT/readyz"
}

up() {
  install_tools
  if [ -e "$W/d1.pid" ]; then echo "cluster.sh: a cluster is already up in $W (cluster.sh down first)" >&2; exit 1; fi
  start_engines
  form_swarm
  load_images
  deploy_stack
  log "up: http://127.0.0.1:$BALANCER_PORT, gRPC 127.0.0.1:$BALANCER_GRPC_PORT (stats: http://127.0.0.1:$BALANCER_STATS_PORT/stats), DOCKER_HOST=unix://$W/d1.sock"
}

stop_pid_file() {  # stop_pid_file FILE: SIGTERM the process, SIGKILL after 30 s
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
}

remove_iptables_chains() {  # every DOCKER* chain, and the rules that jump to them
  local table rule chain
  for table in filter nat; do
    { iptables -t "$table" -S 2>/dev/null | grep -E '^-A .* -j DOCKER' || true; } | sed 's/^-A/-D/' | while read -r rule; do
      eval iptables -t "$table" "$rule" 2>/dev/null || true
    done
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N DOCKER/ {print $2}'); do
      iptables -t "$table" -F "$chain" 2>/dev/null || true
      iptables -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
}

down() {
  if [ -S "$W/d1.sock" ]; then
    d1 stack rm "$STACK" >/dev/null 2>&1 || true
    d2 swarm leave --force >/dev/null 2>&1 || true
    d1 swarm leave --force >/dev/null 2>&1 || true
  fi
  stop_pid_file "$W/d2.pid"
  stop_pid_file "$W/d1.pid"
  # Container shims and proxies started for these engines, should any outlive them.
  pkill -9 -f -- "$W/" 2>/dev/null || true
  for bridge in docker0 docker_gwbridge; do ip link del "$bridge" 2>/dev/null || true; done
  ip link del "$VETH1" 2>/dev/null || true
  ip netns del "$NETNS" 2>/dev/null || true
  remove_iptables_chains
  if [ -d "$W" ]; then
    { grep -o " $W[^ ]*" /proc/mounts || true; } | sort -r | while read -r mount; do umount -l "$mount" 2>/dev/null || true; done
    rm -rf "$W"
  fi
  log "down: nothing left of the cluster"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  env) echo "node 1: DOCKER_HOST=unix://$W/d1.sock"; echo "node 2: DOCKER_HOST=unix://$W/d2.sock" ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
