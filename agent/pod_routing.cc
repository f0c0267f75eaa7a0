#include "agent/pod_routing.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/fd.h"
#include "common/netns.h"
#include "weft_bpf.h"

namespace weft::agent {
namespace {

// One rtnetlink request: header, family-specific struct, attributes.
class NlRequest {
 public:
  NlRequest(uint16_t type, uint16_t flags, const void* body, size_t body_len) {
    buf_.resize(NLMSG_SPACE(body_len));
    auto* h = reinterpret_cast<nlmsghdr*>(buf_.data());
    h->nlmsg_type = type;
    h->nlmsg_flags = flags;
    h->nlmsg_seq = 1;
    memcpy(NLMSG_DATA(h), body, body_len);
    h->nlmsg_len = NLMSG_LENGTH(body_len);
  }
  void AddU32(uint16_t type, uint32_t v) {
    size_t off = NLMSG_ALIGN(hdr()->nlmsg_len);
    buf_.resize(off + RTA_SPACE(sizeof v));
    auto* a = reinterpret_cast<rtattr*>(buf_.data() + off);
    a->rta_type = type;
    a->rta_len = RTA_LENGTH(sizeof v);
    memcpy(RTA_DATA(a), &v, sizeof v);
    hdr()->nlmsg_len = off + RTA_SPACE(sizeof v);
  }
  const char* data() const { return buf_.data(); }
  size_t size() const { return reinterpret_cast<const nlmsghdr*>(buf_.data())->nlmsg_len; }

 private:
  nlmsghdr* hdr() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }
  std::vector<char> buf_;
};

// Sends req on a NETLINK_ROUTE socket of the current netns and waits for the
// ACK; EEXIST counts as success (already set up).
absl::Status Transact(const NlRequest& req, const char* what) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return absl::InternalError(absl::StrCat(what, ": netlink socket: ", strerror(errno)));
  UniqueFd s(fd);
  sockaddr_nl kernel = {};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd, req.data(), req.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) <
      0) {
    return absl::InternalError(absl::StrCat(what, ": netlink send: ", strerror(errno)));
  }
  alignas(nlmsghdr) char buf[8192];
  ssize_t n = recv(fd, buf, sizeof buf, 0);
  if (n < 0) return absl::InternalError(absl::StrCat(what, ": netlink recv: ", strerror(errno)));
  for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, static_cast<unsigned>(n));
       h = NLMSG_NEXT(h, n)) {
    if (h->nlmsg_type != NLMSG_ERROR) continue;
    int err = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
    if (err == 0 || err == EEXIST) return absl::OkStatus();
    return absl::InternalError(absl::StrCat(what, ": ", strerror(err)));
  }
  return absl::InternalError(absl::StrCat(what, ": no netlink acknowledgement"));
}

absl::Status AddRule() {
  fib_rule_hdr frh = {};
  frh.family = AF_INET;
  frh.action = FR_ACT_TO_TBL;
  NlRequest req(RTM_NEWRULE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &frh,
                sizeof frh);
  req.AddU32(FRA_TABLE, WEFT_TPROXY_TABLE);
  req.AddU32(FRA_PRIORITY, WEFT_TPROXY_RULE_PRIO);
  req.AddU32(FRA_FWMARK, WEFT_TPROXY_MARK);
  req.AddU32(FRA_FWMASK, WEFT_TPROXY_MARK_MASK);
  return Transact(req, absl::StrCat("ip rule add fwmark 0x", absl::Hex(WEFT_TPROXY_MARK), "/0x",
                                    absl::Hex(WEFT_TPROXY_MARK_MASK), " lookup ", WEFT_TPROXY_TABLE)
                           .c_str());
}

absl::Status AddLocalRoute() {
  unsigned lo = if_nametoindex("lo");
  if (lo == 0) return absl::FailedPreconditionError("the pod netns has no 'lo' device");
  rtmsg rtm = {};
  rtm.rtm_family = AF_INET;
  rtm.rtm_table = RT_TABLE_UNSPEC;  // RTA_TABLE below (ids > 255)
  rtm.rtm_protocol = RTPROT_STATIC;
  rtm.rtm_scope = RT_SCOPE_HOST;
  rtm.rtm_type = RTN_LOCAL;
  NlRequest req(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &rtm,
                sizeof rtm);
  req.AddU32(RTA_TABLE, WEFT_TPROXY_TABLE);
  req.AddU32(RTA_OIF, lo);
  return Transact(
      req, absl::StrCat("ip route add local 0.0.0.0/0 dev lo table ", WEFT_TPROXY_TABLE).c_str());
}

absl::Status EnableFwmarkAccept() {
  // /proc/sys/net is resolved in the netns of the opening thread.
  const char* path = "/proc/sys/net/ipv4/tcp_fwmark_accept";
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", path, ": ", strerror(errno)));
  UniqueFd f(fd);
  if (write(fd, "1\n", 2) != 2) {
    return absl::InternalError(absl::StrCat("write 1 to ", path, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SetupTransparentReturnPath(int netns_fd) {
  absl::Status result;
  absl::Status st = RunInNetns(netns_fd, [&] {
    result = EnableFwmarkAccept();
    if (result.ok()) result = AddRule();
    if (result.ok()) result = AddLocalRoute();
  });
  if (!st.ok()) return st;
  if (!result.ok()) {
    return absl::Status(result.code(),
                        absl::StrCat("transparent return path in pod netns: ", result.message()));
  }
  return absl::OkStatus();
}

}  // namespace weft::agent
