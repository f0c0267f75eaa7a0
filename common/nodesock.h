// Node-socket framing (agent <-> ztunnel over a unix stream socket).
//
// A frame is an 8-byte header -- payload length and number of file
// descriptors, both 32-bit big-endian -- followed by the payload (a
// serialized weft.api.ToZtunnel / FromZtunnel). The descriptors travel as
// SCM_RIGHTS ancillary data on the sendmsg that carries the header, so they
// arrive in frame order; the decoder hands each frame exactly the number of
// descriptors its header announced.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/fd.h"

namespace weft::nodesock {

inline constexpr size_t kHeaderSize = 8;
inline constexpr uint32_t kMaxPayload = 64u << 20;  // a NodeConfig for a large cluster
inline constexpr uint32_t kMaxFds = 16;

struct Frame {
  std::string payload;
  std::vector<UniqueFd> fds;
};

// Encodes the 8-byte header for a payload of `len` bytes carrying `nfds` fds.
std::string EncodeHeader(uint32_t len, uint32_t nfds);

// Incremental decoder: feed bytes and received fds in arrival order, pull
// whole frames. Malformed input (oversized length, too many fds, a frame
// claiming fds that never arrived) is an error naming what was wrong; after an
// error the stream is unusable and the peer should be dropped.
class FrameDecoder {
 public:
  void Feed(std::string_view bytes);
  void FeedFd(UniqueFd fd) { fds_.push_back(std::move(fd)); }
  // Returns a frame when one is complete, nullopt when more bytes are needed.
  absl::StatusOr<std::optional<Frame>> Next();
  size_t buffered() const { return buf_.size(); }

 private:
  std::string buf_;
  std::deque<UniqueFd> fds_;
};

// Blocking-safe send of one frame (handles partial writes; the fds go with
// the first chunk). MSG_NOSIGNAL: a closed peer is an error, not SIGPIPE.
absl::Status SendFrame(int sock, std::string_view payload, std::span<const int> fds = {});

// Reads what is available from `sock` into the decoder (one recvmsg). Returns
// false on orderly EOF. EAGAIN on a non-blocking socket returns true.
absl::StatusOr<bool> ReadInto(int sock, FrameDecoder& dec);

}  // namespace weft::nodesock
