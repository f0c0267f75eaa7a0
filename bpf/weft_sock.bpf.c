// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// weft's socket steering: the four programs that replace iptables for the
// in-pod data path. connect4, sockops and getsockopt are attached once at the
// cgroup v2 root and therefore run for EVERY socket on the machine: they must
// pass through anything that is not an enrolled pod's TCP socket, and several
// agents (nodes as netns on one kernel) may each attach their own copy, so
// every program acts only on entries of its own maps. sk_lookup is attached
// per enrolled pod netns.
//
// IPv6: not handled yet. connect6 and getsockopt(SOL_IPV6,
// IP6T_SO_ORIGINAL_DST) will reuse the same maps (addresses are stored as
// 16-byte v4-mapped addresses, see weft_bpf.h).
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "weft_bpf.h"

#define AF_INET 2
#define SOCK_STREAM 1
#define LOOPBACK_IFINDEX 1  // lo is ifindex 1 in every netns

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline void v4_mapped(struct weft_addr* a, __u32 ip4_be) {
  a->ip[0] = 0;
  a->ip[1] = 0;
  a->ip[2] = bpf_htonl(0xffff);
  a->ip[3] = ip4_be;
}

// 127.0.0.0/8 and 0.0.0.0 (connecting to 0.0.0.0 means "this host"): the
// pod's own loopback traffic, never captured.
static __always_inline bool is_local_v4(__u32 ip4_be) {
  __u32 ip = bpf_ntohl(ip4_be);
  return (ip >> 24) == 127 || ip == 0;
}

// ztunnel's own sockets in a pod netns: its HBONE and passthrough connects and
// its connections to the app (plain, or transparent with the client's IP).
static __always_inline bool is_ztunnel_mark(__u32 mark) {
  return mark == WEFT_ZTUNNEL_MARK || mark == WEFT_TPROXY_MARK;
}

// ---------------------------------------------------------------------------
// cgroup/connect4: capture an enrolled pod's outbound TCP connects.
SEC("cgroup/connect4")
int weft_connect4(struct bpf_sock_addr* ctx) {
  if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP) return 1;
  __u64 netns = bpf_get_netns_cookie(ctx);
  if (!bpf_map_lookup_elem(&enrolled, &netns)) return 1;
  // Loopback stays inside the pod (and 127.0.0.1:15001 itself must not loop).
  if (is_local_v4(ctx->user_ip4)) return 1;
  // ztunnel's own sockets in the pod netns (its HBONE and passthrough
  // connects) carry the mark; redirecting them would loop into 15001.
  struct bpf_sock* sk = ctx->sk;
  if (!sk) return 1;
  if (is_ztunnel_mark(sk->mark)) return 1;

  struct weft_orig_dst orig = {};
  v4_mapped(&orig.dst.addr, ctx->user_ip4);
  orig.dst.port = (__u16)ctx->user_port;  // network order
  __u64 cookie = bpf_get_socket_cookie(ctx);
  // Fail closed: a connect we could not record would reach ztunnel without a
  // destination, or (if not rewritten) bypass the mesh. The app sees EPERM.
  if (bpf_map_update_elem(&orig_by_cookie, &cookie, &orig, BPF_ANY) != 0) return 0;

  ctx->user_ip4 = bpf_htonl(0x7f000001);
  ctx->user_port = bpf_htons(WEFT_PORT_OUTBOUND);
  return 1;
}

// ---------------------------------------------------------------------------
// sockops: once a redirected connect is established, its local ip:port is
// known; re-key the original destination by it, which is what the proxy sees
// as the peer of the accepted socket. ACTIVE_ESTABLISHED runs before the final
// ACK is sent, so the proxy's accept() cannot win the race.
static __always_inline void local_key_v4(struct bpf_sock_ops* skops, struct weft_local_key* key) {
  key->netns_cookie = bpf_get_netns_cookie(skops);
  v4_mapped(&key->local.addr, skops->local_ip4);
  key->local.port = bpf_htons((__u16)skops->local_port);  // sock_ops local_port is host order
}

// Fills the tuple of this (client) socket as the receiving netns's
// sk_lookup will see it.
static __always_inline void tuple_key_v4(struct bpf_sock_ops* skops, struct weft_tuple_key* t) {
  v4_mapped(&t->src.addr, skops->local_ip4);
  t->src.port = bpf_htons((__u16)skops->local_port);
  v4_mapped(&t->dst.addr, skops->remote_ip4);
  t->dst.port = (__u16)(skops->remote_port >> 16);  // network order in the upper half (LE)
}

// ztunnel delivering inbound traffic to the app connects from inside the pod
// netns to podIP:port, possibly with the client's source IP (IP_TRANSPARENT).
// Such a SYN reaches sk_lookup with the ingress ifindex of the pod's eth0 (the
// device owning the local address, not lo), indistinguishable from remote
// traffic; recording the tuple here (before the SYN is sent) tells sk_lookup
// to let it through.
static __always_inline void on_connect(struct bpf_sock_ops* skops) {
  if (skops->family != AF_INET) return;
  struct bpf_sock* sk = skops->sk;
  if (!sk || !is_ztunnel_mark(sk->mark)) return;
  __u64 netns = bpf_get_netns_cookie(skops);
  if (!bpf_map_lookup_elem(&enrolled, &netns)) return;
  struct weft_tuple_key t = {};
  tuple_key_v4(skops, &t);
  __u32 one = 1;
  bpf_map_update_elem(&ztunnel_syns, &t, &one, BPF_ANY);
}

static __always_inline void on_active_established(struct bpf_sock_ops* skops) {
  if (skops->family != AF_INET) return;
  // ztunnel's: established sockets are found before sk_lookup runs, the
  // tuple is no longer needed.
  struct bpf_sock* sk = skops->sk;
  if (sk && is_ztunnel_mark(sk->mark)) {
    struct weft_tuple_key t = {};
    tuple_key_v4(skops, &t);
    bpf_map_delete_elem(&ztunnel_syns, &t);
  }
  __u64 cookie = bpf_get_socket_cookie(skops);
  struct weft_orig_dst* orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
  if (!orig) return;  // not redirected by this agent's connect4
  struct weft_local_key key = {};
  local_key_v4(skops, &key);
  struct weft_orig_dst val = *orig;
  val.flags = 0;
  bpf_map_update_elem(&orig_by_local, &key, &val, BPF_ANY);
  bpf_map_delete_elem(&orig_by_cookie, &cookie);
  // Ask for state changes of this socket so its entry can go when it closes.
  bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline void on_state_change(struct bpf_sock_ops* skops) {
  if (skops->family != AF_INET || skops->args[1] != BPF_TCP_CLOSE) return;
  struct weft_local_key key = {};
  local_key_v4(skops, &key);
  struct weft_orig_dst* orig = bpf_map_lookup_elem(&orig_by_local, &key);
  // Only once the proxy has read it: a client that writes and closes at once
  // reaches TCP_CLOSE (via FIN_WAIT2 timewait) possibly before the proxy's
  // accept(). Unread entries age out of the LRU or are overwritten when the
  // port is reused.
  if (orig && (orig->flags & WEFT_ORIG_READ)) bpf_map_delete_elem(&orig_by_local, &key);
}

SEC("sockops")
int weft_sockops(struct bpf_sock_ops* skops) {
  switch (skops->op) {
    case BPF_SOCK_OPS_TCP_CONNECT_CB:
      on_connect(skops);
      break;
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
      on_active_established(skops);
      break;
    case BPF_SOCK_OPS_STATE_CB:
      on_state_change(skops);
      break;
    default:
      break;
  }
  return 1;
}

// ---------------------------------------------------------------------------
// cgroup/getsockopt: answer SO_ORIGINAL_DST for connections accepted on
// 15001. Runs after the kernel's own getsockopt for every call on the
// machine: anything that is not ours leaves ctx->retval and optval as they are.
//
// It deliberately does not require the netns to still be enrolled: a
// connection redirected just before Unenroll must still be answerable (the
// key includes the netns cookie, so a hit is always one of our redirects).
SEC("cgroup/getsockopt")
int weft_getsockopt(struct bpf_sockopt* ctx) {
  if (ctx->level != WEFT_SOL_IP || ctx->optname != WEFT_SO_ORIGINAL_DST) return 1;
  struct bpf_sock* sk = ctx->sk;
  if (!sk) return 1;
  if (sk->family != AF_INET || sk->protocol != IPPROTO_TCP) return 1;
  if (sk->src_port != WEFT_PORT_OUTBOUND) return 1;  // bpf_sock.src_port is host order

  struct weft_local_key key = {};
  key.netns_cookie = bpf_get_netns_cookie(ctx);
  v4_mapped(&key.local.addr, sk->dst_ip4);
  key.local.port = sk->dst_port;  // __be16
  struct weft_orig_dst* orig = bpf_map_lookup_elem(&orig_by_local, &key);
  if (!orig) return 1;

  struct sockaddr_in* sa = ctx->optval;
  if ((void*)(sa + 1) > ctx->optval_end) return 1;  // caller's buffer too small
  sa->sin_family = AF_INET;
  sa->sin_port = orig->dst.port;
  sa->sin_addr.s_addr = orig->dst.addr.ip[3];
  __builtin_memset(sa->__pad, 0, sizeof(sa->__pad));
  ctx->optlen = sizeof(*sa);
  ctx->retval = 0;
  orig->flags |= WEFT_ORIG_READ;
  return 1;
}

// ---------------------------------------------------------------------------
// sk_lookup (per enrolled pod netns): steer inbound TCP for the pod IP to
// ztunnel's 15006 listener, whatever the port, like iptables TPROXY.
// (bpf_get_netns_cookie is not available to sk_lookup programs, hence maps
// keyed by pod IP.)
SEC("sk_lookup")
int weft_sk_lookup(struct bpf_sk_lookup* ctx) {
  if (ctx->family != AF_INET || ctx->protocol != IPPROTO_TCP) return SK_PASS;
  // Loopback device traffic (127.0.0.0/8 and the like) is the pod's own.
  if (ctx->ingress_ifindex == LOOPBACK_IFINDEX) return SK_PASS;
  // The pod connecting to its own IP: local traffic too (its SYN carries the
  // ifindex of the device owning the pod IP, not lo's, so the check above
  // does not catch it).
  if (ctx->remote_ip4 == ctx->local_ip4) return SK_PASS;
  // ztunnel's and the node's ports get their normal listeners.
  switch (ctx->local_port) {  // host order
    case WEFT_PORT_OUTBOUND:
    case WEFT_PORT_INBOUND:
    case WEFT_PORT_INBOUND_HBONE:
    case WEFT_PORT_METRICS:
    case WEFT_PORT_READINESS:
      return SK_PASS;
    default:
      break;
  }
  struct weft_addr key = {};
  v4_mapped(&key, ctx->local_ip4);
  struct bpf_sock* sk = bpf_map_lookup_elem(&inbound_listeners, &key);
  if (!sk) {
    // An enrolled pod whose 15006 listener is gone (closing a socket removes
    // it from the sockhash): ztunnel is restarting or dead. Fail closed:
    // refuse (SK_DROP makes TCP answer with a RST) rather than hand the app
    // traffic no policy has seen. 15008 (HBONE) is not affected.
    if (bpf_map_lookup_elem(&pod_ips, &key)) return SK_DROP;
    return SK_PASS;
  }
  // ztunnel's own connects to the app (see on_connect in sockops).
  struct weft_tuple_key t = {};
  v4_mapped(&t.src.addr, ctx->remote_ip4);
  t.src.port = ctx->remote_port;  // __be16
  v4_mapped(&t.dst.addr, ctx->local_ip4);
  t.dst.port = bpf_htons((__u16)ctx->local_port);  // host order in the ctx
  if (bpf_map_lookup_elem(&ztunnel_syns, &t)) {
    bpf_sk_release(sk);
    return SK_PASS;
  }
  // On error (e.g. the listener is closing) fall back to the normal lookup.
  bpf_sk_assign(ctx, sk, 0);
  bpf_sk_release(sk);
  return SK_PASS;
}
