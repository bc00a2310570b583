// A node's membership lease, as the node sees it from its keep-alives: whether it holds one,
// and when it must stop what other nodes may take over, so that it has stopped before the
// store can end the lease. Pure: the caller gives every time point.
#pragma once

#include <chrono>
#include <cstdint>

namespace troupe::cluster {

class lease_clock {
 public:
  using clock = std::chrono::steady_clock;

  /// A lease of ttl_s seconds was granted, or a keep-alive sent at `sent` renewed it: the
  /// store ends it no earlier than sent + ttl.
  void renewed(clock::time_point sent, int64_t ttl_s) {
    held_ = true;
    last_sent_ = sent;
    ttl_ = std::chrono::milliseconds(ttl_s * 1000);  // in ms: half a 1 s lease is not 0 s
  }
  /// The store says the lease is gone.
  void lost() { held_ = false; }

  bool held() const { return held_; }
  /// Keep-alives go this often: several fit in the time before the node must fence itself.
  std::chrono::milliseconds keep_alive_every() const { return ttl_ / 6; }
  /// The node must not act as if it held the lease any more: half the TTL has passed since
  /// the last keep-alive that renewed it (the other half is the time to stop its parts).
  bool must_fence(clock::time_point now) const { return !held_ || now >= last_sent_ + ttl_ / 2; }
  /// The earliest the store could have ended the lease.
  clock::time_point expires_by() const { return last_sent_ + ttl_; }
  clock::time_point last_renewal() const { return last_sent_; }

 private:
  bool held_ = false;
  clock::time_point last_sent_{};
  std::chrono::milliseconds ttl_{3000};
};

}  // namespace troupe::cluster
