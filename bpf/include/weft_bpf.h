// Everything the BPF programs (bpf/weft_sock.bpf.c) and the agent
// (agent/bpf_manager.cc) must agree on: constants, the structs stored in maps
// (sizes are static_asserted on the C++ side) and, for the BPF side, every map
// with one comment line each.
//
// Addresses are stored as 16-byte IPv6 addresses, IPv4 as v4-mapped
// (::ffff:a.b.c.d, like the kernel does), so IPv6 support (cgroup/connect6,
// IP6T_SO_ORIGINAL_DST) can be added without changing any map layout. Every
// address and port stored in a map is in NETWORK byte order.
#pragma once

#ifndef __bpf__
#include <linux/types.h>
#endif

// ztunnel sets SO_MARK to this on every socket it creates in a pod netns;
// connect4 never redirects such sockets.
#define WEFT_ZTUNNEL_MARK 0x539
// ztunnel's connection to the app that carries the client's source IP
// (IP_TRANSPARENT, bound to the client's address). connect4 and sockops treat
// it like WEFT_ZTUNNEL_MARK. The agent sets up each enrolled pod netns so the
// app's replies to such a connection come back to ztunnel's socket instead of
// leaving through eth0: net.ipv4.tcp_fwmark_accept=1 (the app's accepted
// socket inherits this mark from the SYN) plus a policy rule
// `fwmark WEFT_TPROXY_MARK/WEFT_TPROXY_MARK_MASK lookup WEFT_TPROXY_TABLE`
// and `local 0.0.0.0/0 dev lo` in that table.
#define WEFT_TPROXY_MARK 0x53a
#define WEFT_TPROXY_MARK_MASK 0xfff
#define WEFT_TPROXY_TABLE 1338      // routing table holding `local 0.0.0.0/0 dev lo`
#define WEFT_TPROXY_RULE_PRIO 1338  // before main (32766), after local (0)

// Ports ztunnel listens on inside each enrolled pod netns.
#define WEFT_PORT_OUTBOUND 15001       // 127.0.0.1: redirected outbound connects
#define WEFT_PORT_INBOUND 15006        // pod IP: inbound plaintext capture
#define WEFT_PORT_INBOUND_HBONE 15008  // pod IP: inbound HBONE (mTLS + HTTP/2 CONNECT)
#define WEFT_PORT_METRICS 15020        // node: metrics
#define WEFT_PORT_READINESS 15021      // node: readiness

// getsockopt(SOL_IP, SO_ORIGINAL_DST), netfilter's ABI that transparent
// proxies already speak.
#define WEFT_SOL_IP 0
#define WEFT_SO_ORIGINAL_DST 80

// Map sizes.
#define WEFT_MAX_ENROLLED 4096  // pod netns per node
#define WEFT_MAX_PENDING_CONNECTS 65536
#define WEFT_MAX_ORIG_DST 262144
#define WEFT_MAX_ZTUNNEL_SYNS 16384

// weft_orig_dst.flags
#define WEFT_ORIG_READ 0x1  // the proxy has read it via SO_ORIGINAL_DST

// An IP address: IPv6, or IPv4 v4-mapped (ip[0]=0, ip[1]=0, ip[2]=htonl(0xffff), ip[3]=v4).
struct weft_addr {
  __u32 ip[4];
};

// An address and a port (network order); pad is always 0 (part of map keys).
struct weft_sockaddr {
  struct weft_addr addr;
  __u16 port;
  __u16 pad;
};

// Key of orig_by_local: a redirected client socket, named by what the proxy
// sees as the peer of the connection it accepted on 15001.
struct weft_local_key {
  __u64 netns_cookie;
  struct weft_sockaddr local;
  __u32 pad;
};

// A TCP connection's two ends as seen by the receiver's sk_lookup: src is
// the connecting socket, dst the address it connects to.
struct weft_tuple_key {
  struct weft_sockaddr src;
  struct weft_sockaddr dst;
};

// The destination the application asked for before connect4 rewrote it.
struct weft_orig_dst {
  struct weft_sockaddr dst;
  __u32 flags;  // WEFT_ORIG_*
};

// Value of enrolled: which pod the netns belongs to (for dumps and Unenroll
// without a pod IP after an agent restart).
struct weft_enrolled {
  struct weft_addr pod_ip;
};

#ifdef __bpf__
// clang-format off
// ---- every map of weft_sock (pinned by the agent under <pin-dir>/maps/<name>) ----
// netns cookie -> pod; presence turns outbound redirection on for that netns.
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, WEFT_MAX_ENROLLED); __type(key, __u64); __type(value, struct weft_enrolled); } enrolled SEC(".maps");
// socket cookie -> original dst, written by connect4, moved to orig_by_local by sockops (LRU: failed connects age out).
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, WEFT_MAX_PENDING_CONNECTS); __type(key, __u64); __type(value, struct weft_orig_dst); } orig_by_cookie SEC(".maps");
// {netns cookie, client local ip:port} -> original dst, read by getsockopt(SO_ORIGINAL_DST) (LRU: never fills).
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, WEFT_MAX_ORIG_DST); __type(key, struct weft_local_key); __type(value, struct weft_orig_dst); } orig_by_local SEC(".maps");
// pod IP -> ztunnel's 15006 listener in that pod's netns, used by sk_lookup.
struct { __uint(type, BPF_MAP_TYPE_SOCKHASH); __uint(max_entries, WEFT_MAX_ENROLLED); __type(key, struct weft_addr); __type(value, __u64); } inbound_listeners SEC(".maps");
// pod IP -> netns cookie of every enrolled pod; sk_lookup refuses inbound for it while its listener is missing (ztunnel restarting).
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, WEFT_MAX_ENROLLED); __type(key, struct weft_addr); __type(value, __u64); } pod_ips SEC(".maps");
// {src, dst} of connects ztunnel's marked sockets are making in an enrolled netns (until established); sk_lookup lets them reach the app.
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, WEFT_MAX_ZTUNNEL_SYNS); __type(key, struct weft_tuple_key); __type(value, __u32); } ztunnel_syns SEC(".maps");
// clang-format on
#endif
