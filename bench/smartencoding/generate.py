#!/usr/bin/env python3
"""Generates synthetic l7_flow_log rows for the storage benchmark (bench/smartencoding.sh).

Usage: generate.py ROWS OUT.parquet [--seed N]

Writes ROWS rows to one Parquet file (zstd, row groups of CHUNK_ROWS), built chunk by chunk so
10M rows fit in little memory. The same seed gives the same file.

The world (cardinalities below) is built first; tags are correlated as in a real cluster:
- a cluster lies in one region, a node in one cluster;
- a service lives in one cluster and namespace, speaks one L7 protocol on one server port and
  runs one process (kernel name);
- a pod belongs to one service and sits on one node: its service, namespace, node, IP, PID and
  process name are fixed by the pod;
- an endpoint belongs to one server service (HTTP paths, gRPC and Dubbo methods, Kafka and MQTT
  topics, DNS query names); Redis, Memcached, MySQL, PostgreSQL and MongoDB rows have an empty
  endpoint, as in DeepFlow;
- only application services (HTTP, HTTP2, gRPC, Dubbo) call others; each server service has a
  fixed set of 1-12 caller services (80% in its own cluster), DNS servers have 40.
A row: pick the protocol by its share in PROTOCOLS, a server service within it with a Zipf skew
(a few hot services), a server pod uniformly, one of the service's endpoints with a Zipf skew, a
caller service and one of its pods. The observation point ('server'/'client', 50/50) decides which
pod's node is the observing host (node, cluster, region). 'packet' rows (10%) carry no process
information (PID 0, empty process name), as in DeepFlow.
"""

import argparse
import os
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Cardinalities
REGIONS = 2
CLUSTERS = 6  # 3 per region
NODES = 200
NAMESPACES = 30
SERVICES = 300
PODS = 5000
ENDPOINTS = 30000  # non-empty endpoint strings, each owned by one server service
# l7_protocol: (share of rows, number of server services)
PROTOCOLS = {
    "HTTP": (0.40, 150), "gRPC": (0.12, 45), "HTTP2": (0.04, 15), "Dubbo": (0.02, 10),
    "Redis": (0.14, 25), "Memcached": (0.02, 6), "MySQL": (0.08, 15), "PostgreSQL": (0.04, 10),
    "MongoDB": (0.03, 8), "DNS": (0.06, 6), "Kafka": (0.04, 8), "MQTT": (0.01, 2),
}
SERVICE_SKEW = 1.0  # Zipf exponent of the server service within a protocol
ENDPOINT_SKEW = 1.1  # Zipf exponent of the endpoint within a service
PACKET_SHARE = 0.10  # signal_source 'packet', else 'ebpf'
STATUS_SHARES = {"ok": 0.95, "client_error": 0.03, "server_error": 0.018, "timeout": 0.002}
WINDOW_S = 3600
START = datetime(2025, 1, 15, 10, tzinfo=timezone.utc)
CHUNK_ROWS = 1 << 20  # one Parquet row group per chunk

APP_PROTOCOLS = ("HTTP", "HTTP2", "gRPC", "Dubbo")
ENDPOINT_PROTOCOLS = APP_PROTOCOLS + ("DNS", "Kafka", "MQTT")
PORTS = {"HTTP": [8080, 8080, 8080, 80, 8000, 3000, 5000, 9000], "gRPC": [50051, 9090, 8081],
         "HTTP2": [443, 8443], "Dubbo": [20880], "Redis": [6379], "Memcached": [11211],
         "MySQL": [3306], "PostgreSQL": [5432], "MongoDB": [27017], "DNS": [53],
         "Kafka": [9092], "MQTT": [1883]}
KNAMES = {"HTTP": ["java", "java", "node", "python3", "gunicorn", "nginx", "ruby", "php-fpm",
                   "dotnet", "GO", "GO", "GO"],
          "gRPC": ["GO", "GO", "GO", "java", "java", "python3"], "HTTP2": ["envoy"],
          "Dubbo": ["java"], "Redis": ["redis-server"], "Memcached": ["memcached"],
          "MySQL": ["mysqld"], "PostgreSQL": ["postgres"], "MongoDB": ["mongod"],
          "DNS": ["coredns"], "Kafka": ["java"], "MQTT": ["beam.smp"]}  # GO: the service's binary
NAME_PREFIX = {"gRPC": "", "HTTP2": "", "Dubbo": "", "HTTP": "", "Redis": "redis-",
               "Memcached": "memcached-", "MySQL": "mysql-", "PostgreSQL": "pg-",
               "MongoDB": "mongo-", "Kafka": "kafka-", "MQTT": "emqx-"}
NAME_SUFFIX = {"HTTP": ["-api", "-service", "-web", "-backend", "-frontend", "-worker", "-svc",
                        "-gateway"], "gRPC": ["-grpc", "-rpc", "-server"], "HTTP2": ["-edge"],
               "Dubbo": ["-provider"]}
# (request_type, weight) per protocol; Dubbo's is the endpoint's method
REQUEST_TYPES = {
    "HTTP": [("GET", 65), ("POST", 25), ("PUT", 5), ("DELETE", 3), ("PATCH", 2)],
    "HTTP2": [("GET", 70), ("POST", 25), ("PUT", 3), ("DELETE", 2)], "gRPC": [("POST", 1)],
    "Dubbo": [("", 1)],
    "Redis": [("GET", 35), ("SET", 15), ("HGET", 10), ("HGETALL", 5), ("HSET", 5), ("MGET", 6),
              ("EXPIRE", 5), ("DEL", 4), ("INCR", 4), ("ZRANGE", 3), ("ZADD", 2), ("EVALSHA", 3),
              ("PING", 3)],
    "Memcached": [("get", 80), ("set", 15), ("delete", 3), ("incr", 2)],
    "MySQL": [("COM_QUERY", 80), ("COM_STMT_EXECUTE", 15), ("COM_STMT_PREPARE", 3),
              ("COM_PING", 2)],
    "PostgreSQL": [("simple query", 55), ("parse", 40), ("sync", 5)],
    "MongoDB": [("find", 60), ("insert", 10), ("update", 10), ("aggregate", 10), ("getMore", 5),
                ("hello", 5)],
    "DNS": [("A", 55), ("AAAA", 40), ("SRV", 3), ("PTR", 2)],
    "Kafka": [("Fetch", 55), ("Produce", 35), ("Metadata", 4), ("OffsetCommit", 3),
              ("Heartbeat", 3)],
    "MQTT": [("PUBLISH", 85), ("PINGREQ", 10), ("SUBSCRIBE", 5)],
}
# response_code per (protocol group, status): (code or None, weight)
_HTTP = {"ok": [(200, 90), (201, 4), (204, 3), (304, 3)],
         "client_error": [(404, 50), (400, 20), (401, 15), (403, 10), (429, 5)],
         "server_error": [(500, 50), (502, 20), (503, 20), (504, 10)]}
CODES = {"HTTP": _HTTP, "HTTP2": _HTTP,
         "gRPC": {"ok": [(0, 1)], "client_error": [(5, 50), (3, 30), (7, 10), (16, 10)],
                  "server_error": [(14, 50), (13, 40), (2, 10)]},
         "Dubbo": {"ok": [(20, 1)], "client_error": [(40, 1)],
                   "server_error": [(70, 60), (80, 40)]},
         "DNS": {"ok": [(0, 1)], "client_error": [(3, 1)], "server_error": [(2, 1)]},
         "Kafka": {"ok": [(0, 1)], "client_error": [(3, 60), (87, 40)],
                   "server_error": [(6, 70), (7, 30)]},
         "MySQL": {"ok": [(None, 1)], "client_error": [(1064, 40), (1062, 40), (1146, 20)],
                   "server_error": [(1205, 50), (1213, 50)]},
         "MongoDB": {"ok": [(None, 1)], "client_error": [(11000, 1)], "server_error": [(50, 1)]},
         "MQTT": {"ok": [(0, 1)], "client_error": [(135, 1)], "server_error": [(131, 1)]}}
# median response_duration µs, median request and response length bytes
SHAPES = {"HTTP": (8000, 400, 2500), "HTTP2": (6000, 300, 3000), "gRPC": (4000, 200, 600),
          "Dubbo": (5000, 300, 800), "Redis": (300, 60, 120), "Memcached": (200, 50, 300),
          "MySQL": (2500, 180, 1200), "PostgreSQL": (3000, 200, 1500),
          "MongoDB": (2000, 250, 2000), "DNS": (800, 45, 120), "Kafka": (5000, 300, 8000),
          "MQTT": (1500, 80, 10)}

WORDS = ("order cart checkout payment invoice billing user account profile auth session token "
         "catalog product price inventory stock warehouse shipping delivery tracking review "
         "rating search recommend feed notification email sms push message chat media image "
         "video upload storage report analytics metric event audit ledger wallet coupon promo "
         "loyalty partner vendor merchant store location geo map route fleet driver booking "
         "ticket support faq content cms config feature flag experiment pricing tax fraud risk "
         "kyc compliance document export import sync scheduler job queue worker gateway "
         "identity consent preference subscription plan quote claim policy").split()
K8S_ALPHABET = np.array(list("bcdfghjklmnpqrstvwxz2456789"))


def zipf_weights(n, s):
    return 1.0 / np.arange(1, n + 1) ** s


def split(total, weights, minimum):
    """Integer counts >= minimum, summing to total, proportional to weights."""
    w = np.asarray(weights, float)
    counts = np.full(len(w), minimum)
    share = (total - counts.sum()) * w / w.sum()
    counts += np.floor(share).astype(int)
    counts[np.argsort(share - np.floor(share))[::-1][: total - counts.sum()]] += 1
    return counts


def grouped_cdf(groups, weights):
    """For items sorted by group: cdf[i] = group + cumulative share of the item within its
    group, so searchsorted(cdf, group + u, 'right') samples an item of that group."""
    groups, weights = np.asarray(groups), np.asarray(weights, float)
    cdf = np.empty(len(weights))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        c = np.cumsum(weights[idx]) / weights[idx].sum()
        c[-1] = 1.0
        cdf[idx] = g + c
    return cdf


def draw(cdf, groups, rng):
    return np.searchsorted(cdf, groups + rng.random(len(groups)), side="right")


class World:
    """The fixed entities and their relations; every per-row column is an index into them."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.regions = ["us-east-1", "eu-west-1"]
        self.clusters = [f"prod-{r}-{z}" for r in ("use1", "euw1") for z in "abc"]
        self.cluster_region = np.repeat(np.arange(REGIONS), CLUSTERS // REGIONS)
        self.node_cluster = np.sort(np.arange(NODES) % CLUSTERS)
        node_ip = rng.choice(1 << 16, NODES, replace=False)
        self.nodes = [f"ip-10-{c}-{ip >> 8}-{ip & 255}.{self.regions[self.cluster_region[c]]}"
                      f".compute.internal" for c, ip in zip(self.node_cluster, node_ip)]
        self.namespaces = ["kube-system"] + [
            "default", "ingress-nginx", "monitoring", "logging", "cert-manager", "istio-system",
            "shop", "checkout", "payments", "catalog", "search", "recommendations", "users",
            "auth", "notifications", "messaging", "inventory", "shipping", "orders", "billing",
            "analytics", "reporting", "media", "cms", "data-platform", "ml-serving", "gateway",
            "partners", "support"]
        assert len(self.namespaces) == NAMESPACES

        # services, grouped by protocol, hottest first within a protocol
        self.protocols = list(PROTOCOLS)
        svc_proto, svc_weight, names = [], [], set()
        for p, (share, n) in PROTOCOLS.items():
            svc_proto += [self.protocols.index(p)] * n
            zipf = zipf_weights(n, SERVICE_SKEW)
            svc_weight += list(share * zipf / zipf.sum())
        assert len(svc_proto) == SERVICES
        self.svc_proto = np.array(svc_proto)
        self.svc_weight = np.array(svc_weight)
        self.services, self.svc_kname, self.svc_port = [], [], []
        self.svc_cluster = rng.integers(0, CLUSTERS, SERVICES)
        self.svc_ns = rng.integers(1, NAMESPACES, SERVICES)
        dns_servers = 0
        for i, pi in enumerate(self.svc_proto):
            p = self.protocols[pi]
            if p == "DNS":  # one per cluster, in kube-system
                self.svc_cluster[i], self.svc_ns[i] = dns_servers % CLUSTERS, 0
                dns_servers += 1
            while True:
                if p == "DNS":
                    name = f"coredns-{self.clusters[self.svc_cluster[i]]}"
                else:
                    words = rng.choice(WORDS, rng.integers(1, 3), replace=False)
                    name = NAME_PREFIX[p] + "-".join(words)
                    if p in NAME_SUFFIX:
                        name += rng.choice(NAME_SUFFIX[p])
                if name not in names:
                    break
            names.add(name)
            self.services.append(name)
            kname = rng.choice(KNAMES[p])
            self.svc_kname.append(name[:15] if kname == "GO" else kname)
            self.svc_port.append(rng.choice(PORTS[p]))
        self.svc_port = np.array(self.svc_port, np.uint16)
        self.svc_dns = [f"{s}.{self.namespaces[n]}.svc.cluster.local"
                        for s, n in zip(self.services, self.svc_ns)]

        # pods: hot services have more replicas; stateful ones are named <svc>-<ordinal>
        npods = split(PODS, np.sqrt(self.svc_weight), 2)
        self.svc_pod_start = np.concatenate([[0], np.cumsum(npods)[:-1]])
        self.svc_npods = npods
        self.pod_svc = np.repeat(np.arange(SERVICES), npods)
        self.pods, self.pod_ips = [], []
        ips = rng.choice(1 << 16, PODS, replace=False)
        self.pod_node = np.empty(PODS, int)
        for i, s in enumerate(self.pod_svc):
            c = self.svc_cluster[s]
            self.pod_node[i] = rng.choice(np.flatnonzero(self.node_cluster == c))
            self.pod_ips.append(f"10.{100 + c}.{ips[i] >> 8}.{ips[i] & 255}")
            if self.protocols[self.svc_proto[s]] in APP_PROTOCOLS + ("DNS",):
                rs = "".join(rng.choice(K8S_ALPHABET, 10))
                self.pods.append(f"{self.services[s]}-{rs}-{''.join(rng.choice(K8S_ALPHABET, 5))}")
            else:
                self.pods.append(f"{self.services[s]}-{i - self.svc_pod_start[s]}")
        self.pod_pid = rng.integers(1000, 4_000_000, PODS).astype(np.uint32)
        self.pod_kname = np.array([self.svc_kname[s] for s in self.pod_svc], object)

        # endpoints: items grouped by service; endpoint-less services get one "" item
        has_ep = np.array([self.protocols[p] in ENDPOINT_PROTOCOLS for p in self.svc_proto])
        factor = {"DNS": 3.0, "Kafka": 0.3, "gRPC": 0.6, "Dubbo": 0.6}
        w = rng.lognormal(0, 1, SERVICES) * [factor.get(self.protocols[p], 1.0)
                                             for p in self.svc_proto]
        nep = np.ones(SERVICES, int)
        nep[has_ep] = split(ENDPOINTS, w[has_ep], 3)
        self.endpoints, self.ep_fixed_type, ep_svc, seen = [], [], [], {""}
        for s in range(SERVICES):
            for _ in range(nep[s]):
                ep, rtype = self.make_endpoint(s, rng, seen) if has_ep[s] else ("", None)
                seen.add(ep)
                self.endpoints.append(ep)
                self.ep_fixed_type.append(rtype)
                ep_svc.append(s)
        assert len(seen) == ENDPOINTS + 1
        self.ep_cdf = grouped_cdf(ep_svc, np.concatenate(
            [zipf_weights(n, ENDPOINT_SKEW) for n in nep]))
        self.svc_cdf = np.cumsum(self.svc_weight) / self.svc_weight.sum()
        self.svc_cdf[-1] = 1.0

        # callers: application services, 80% from the server's own cluster
        callers = np.flatnonzero([self.protocols[p] in APP_PROTOCOLS for p in self.svc_proto])
        call_svc, call_srv = [], []
        for s in range(SERVICES):
            local = callers[(self.svc_cluster[callers] == self.svc_cluster[s]) & (callers != s)]
            other = callers[(self.svc_cluster[callers] != self.svc_cluster[s])]
            k = 40 if self.protocols[self.svc_proto[s]] == "DNS" else rng.integers(1, 13)
            picks = {int(rng.choice(local if rng.random() < 0.8 else other)) for _ in range(k)}
            call_svc += sorted(picks)
            call_srv += [s] * len(picks)
        self.call_svc = np.array(call_svc)
        self.call_cdf = grouped_cdf(call_srv, np.concatenate(
            [zipf_weights(c, 1.0) for c in np.bincount(call_srv, minlength=SERVICES)]))

        # request types and response codes as grouped tables
        self.rtypes = sorted({t for v in REQUEST_TYPES.values() for t, _ in v}
                             | {t for t in self.ep_fixed_type if t})
        rt_group, rt_item, rt_w = [], [], []
        for pi, p in enumerate(self.protocols):
            for t, wt in REQUEST_TYPES[p]:
                rt_group.append(pi); rt_item.append(self.rtypes.index(t)); rt_w.append(wt)
        self.rt_item, self.rt_cdf = np.array(rt_item), grouped_cdf(rt_group, rt_w)
        self.ep_type = np.array([self.rtypes.index(t) if t else -1 for t in self.ep_fixed_type])
        self.statuses = list(STATUS_SHARES)
        code_group, code_item, code_w = [], [], []
        for pi, p in enumerate(self.protocols):
            for si, st in enumerate(self.statuses):
                for code, wt in CODES.get(p, {}).get(st, [(None, 1)]):
                    code_group.append(pi * 4 + si); code_w.append(wt)
                    code_item.append(-1 if code is None else code)
        self.code_item, self.code_cdf = np.array(code_item), grouped_cdf(code_group, code_w)
        self.shape = np.array([SHAPES[p] for p in self.protocols], float)
        self.svc_slowness = rng.lognormal(0, 0.5, SERVICES)

    def make_endpoint(self, s, rng, seen):
        p, svc = self.protocols[self.svc_proto[s]], self.services[s]
        base = svc.split("-")[0]
        for _ in range(1000):
            a, b = rng.choice(WORDS, 2, replace=False)
            rtype = None
            if p in ("HTTP", "HTTP2"):
                form = rng.integers(0, 4)
                ep = [f"/api/v{rng.integers(1, 3)}/{a}s", f"/api/v{rng.integers(1, 3)}/{a}s/{b}",
                      f"/api/v1/{a}s/{rng.integers(10000, 10_000_000)}", f"/{base}/{a}/{b}"][form]
                rtype = rng.choice(["GET", "GET", "GET", "POST", "PUT", "DELETE"])
            elif p == "gRPC":
                verb = rng.choice(["Get", "List", "Create", "Update", "Delete", "Watch"])
                ep = f"/{base}.v1.{base.title()}Service/{verb}{a.title()}{b.title()}"
            elif p == "Dubbo":
                verb = rng.choice(["get", "query", "save", "update", "remove"])
                method = f"{verb}{a.title()}{b.title()}"
                ep, rtype = f"com.acme.{base}.api.{a.title()}Service/{method}", method
            elif p == "DNS":
                form = rng.integers(0, 3)
                internal = self.svc_dns[rng.integers(0, SERVICES)]
                external = rng.choice(
                    ["amazonaws.com", "googleapis.com", "stripe.com", "example.net"])
                ep = [internal, f"{a}-{b}.{external}",
                      f"{a}{rng.integers(1, 999)}.{b}.internal"][form]
            elif p == "Kafka":
                ep = f"{base}.{a}.{b}.v{rng.integers(1, 4)}"
            else:  # MQTT
                ep = f"devices/{rng.integers(0, 1_000_000):06d}/{a}"
            if ep not in seen:
                return ep, rtype
        raise RuntimeError(f"no new endpoint for {svc}")


def chunk_table(w, first_row, n, total_rows, seed, chunk_index):
    rng = np.random.default_rng([seed, chunk_index])
    srv_svc = np.searchsorted(w.svc_cdf, rng.random(n), side="right")
    srv_pod = w.svc_pod_start[srv_svc] + (rng.random(n) * w.svc_npods[srv_svc]).astype(int)
    cli_svc = w.call_svc[draw(w.call_cdf, srv_svc, rng)]
    cli_pod = w.svc_pod_start[cli_svc] + (rng.random(n) * w.svc_npods[cli_svc]).astype(int)
    server_side = rng.random(n) < 0.5
    node = w.pod_node[np.where(server_side, srv_pod, cli_pod)]
    cluster = w.node_cluster[node]
    proto = w.svc_proto[srv_svc]
    ep = draw(w.ep_cdf, srv_svc, rng)
    rtype = w.rt_item[draw(w.rt_cdf, proto, rng)]
    fixed = w.ep_type[ep]
    use_fixed = (fixed >= 0) & ((rng.random(n) < 0.9) | (proto == w.protocols.index("Dubbo")))
    rtype = np.where(use_fixed, fixed, rtype)
    status = rng.choice(len(STATUS_SHARES), n, p=list(STATUS_SHARES.values()))
    code = w.code_item[draw(w.code_cdf, proto * 4 + status, rng)]
    packet = rng.random(n) < PACKET_SHARE

    med_dur, med_req, med_resp = w.shape[proto].T
    dur = med_dur * w.svc_slowness[srv_svc] * rng.lognormal(0, 1.0, n)
    dur = np.where(status == 2, dur * 3, dur)
    dur = np.where(status == 3, rng.choice([1e6, 5e6, 30e6], n), dur)
    req_len = med_req * rng.lognormal(0, 0.8, n)
    resp_len = np.where(status == 3, 0, med_resp * rng.lognormal(0, 1.2, n))
    slot = WINDOW_S * 1e6 / total_rows
    t0 = int(START.timestamp() * 1e6)
    slot_start = (np.arange(first_row, first_row + n) * slot).astype(np.int64)
    time = t0 + slot_start + (rng.random(n) * slot).astype(np.int64)  # increasing, jittered

    def tag(values, idx):
        return pc.take(pa.array(values, pa.string()), pa.array(idx))

    kname = lambda pod: tag(["", *w.pod_kname], np.where(packet, 0, pod + 1))
    pid = lambda pod: pa.array(np.where(packet, 0, w.pod_pid[pod]).astype(np.uint32))
    http = proto == w.protocols.index("HTTP")
    cols = {
        "time": pa.array(time, pa.timestamp("us", tz="UTC")),
        "response_duration": pa.array(dur.astype(np.uint64)),
        "request_length": pa.array(req_len.astype(np.uint64)),
        "response_length": pa.array(resp_len.astype(np.uint64)),
        "response_code": pa.array(code.astype(np.int32), mask=code == -1),
        "client_port": pa.array(rng.integers(32768, 61000, n).astype(np.uint16)),
        "server_port": pa.array(w.svc_port[srv_svc]),
        "process_id_0": pid(cli_pod),
        "process_id_1": pid(srv_pod),
        "region": tag(w.regions, w.cluster_region[cluster]),
        "cluster": tag(w.clusters, cluster),
        "node": tag(w.nodes, node),
        "signal_source": tag(["ebpf", "packet"], packet.astype(int)),
        "observation_point": tag(["client", "server"], server_side.astype(int)),
        "l7_protocol": tag(w.protocols, proto),
        "request_type": tag(w.rtypes, rtype),
        "request_domain": tag(["", *w.svc_dns], np.where(http, srv_svc + 1, 0)),
        "endpoint": tag(w.endpoints, ep),
        "response_status": tag(w.statuses, status),
        "ip_0": tag(w.pod_ips, cli_pod),
        "ip_1": tag(w.pod_ips, srv_pod),
        "process_kname_0": kname(cli_pod),
        "process_kname_1": kname(srv_pod),
        "auto_service_0": tag(w.services, cli_svc),
        "auto_service_1": tag(w.services, srv_svc),
        "pod_0": tag(w.pods, cli_pod),
        "pod_1": tag(w.pods, srv_pod),
        "pod_ns_0": tag(w.namespaces, w.svc_ns[cli_svc]),
        "pod_ns_1": tag(w.namespaces, w.svc_ns[srv_svc]),
        "pod_node_0": tag(w.nodes, w.pod_node[cli_pod]),
        "pod_node_1": tag(w.nodes, w.pod_node[srv_pod]),
    }
    return pa.table(cols)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    w = World(args.seed)
    print(f"cardinalities: regions {REGIONS}, clusters {CLUSTERS}, nodes {NODES}, namespaces "
          f"{NAMESPACES}, services {SERVICES}, pods {PODS}, endpoints {ENDPOINTS} (+ ''), "
          f"l7 protocols {len(PROTOCOLS)}, request types {len(w.rtypes)}")
    writer = None
    for i, first in enumerate(range(0, args.rows, CHUNK_ROWS)):
        table = chunk_table(w, first, min(CHUNK_ROWS, args.rows - first), args.rows, args.seed, i)
        if writer is None:
            writer = pq.ParquetWriter(args.out, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=CHUNK_ROWS)
    writer.close()
    print(f"wrote {args.rows} rows to {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
