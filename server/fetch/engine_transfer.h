// Internal to server/fetch/: the transfer, one attempt of one item on the
// curl multi handle (engine_transfer.cc: easy-handle setup and reuse, the
// curl callbacks OnBody/OnHeader/OnOpenSocket/OnPrereq, engine-followed
// redirects with credential headers, and the mapping of a finished attempt
// to a status: AttemptStatus, StatusCodeForHttp).
//
// Owns: Transfer (the attempt's easy handle, request headers, the body and
// kept headers as they arrive, the address policy's verdicts) and the curl
// handle types.
// Threads: the I/O thread only. A Transfer belongs to its Item (in
// engine_scheduler.h), alive while its easy handle is on the multi handle;
// the curl callbacks reach it through the handle's user pointer, from
// inside curl_multi_perform on the I/O thread (they assert io_thread).
#ifndef FETCHD_SERVER_FETCH_ENGINE_TRANSFER_H_
#define FETCHD_SERVER_FETCH_ENGINE_TRANSFER_H_

#include <curl/curl.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/fetch/engine_role.h"
#include "server/fetch/fetch.h"

namespace fetchd::fetch::internal {

struct Identity;  // engine_scheduler.h

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct MultiDeleter {
  void operator()(CURLM* multi) const { curl_multi_cleanup(multi); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using EasyHandle = std::unique_ptr<CURL, EasyDeleter>;

// Transport failures where a new connection may well succeed.
bool IsConnectError(CURLcode rc);

// "host:port" of an absolute URL, as written.
inline absl::string_view HostOf(absl::string_view url) {
  size_t start = url.find("://");
  start = start == absl::string_view::npos ? 0 : start + 3;
  const size_t end = url.find_first_of("/?#", start);
  return url.substr(start,
                    end == absl::string_view::npos ? url.npos : end - start);
}

// What --max_per_host counts: "host:port" with the host as the address
// guard sees it (NormalizeHost: lower case, no trailing dot, IPv6 and IPv4
// in canonical form, IDNA ASCII) and the port written out (80, 443), so
// that no spelling of one origin gets a second share. A URL that is
// canonical already (the usual case) is not parsed. For a valid URL; one
// that cannot be parsed counts as written.
std::string HostKey(absl::string_view url);

// One attempt of one item, alive while its easy handle is on the multi.
struct Transfer {
  uint64_t batch_id = 0;
  size_t index = 0;
  std::string host;              // counted against --max_per_host while running
  Identity* identity = nullptr;  // its batch's, counted while running
  EasyHandle easy;
  std::unique_ptr<curl_slist, SlistDeleter> request_headers;
  // The attempt's "traceparent: ..." line (its own span id; every redirect
  // hop of the attempt carries the same); empty: none.
  std::string traceparent;
  const FetchSpec* spec = nullptr;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool body_too_large = false;
  // Response header lines and bytes of the current response (a status
  // line starts a new count), and which cap ended the transfer, if one did.
  int header_lines = 0;
  int64_t header_bytes = 0;
  enum class HeaderCap { kNone, kCount, kBytes, kLine };
  HeaderCap header_cap = HeaderCap::kNone;
  // The address policy's last refusal, and whether a socket was opened
  // since (another address of the host, or a later connection): the
  // refusal decides only if the connect then failed with none allowed.
  absl::Status refused;
  bool allowed_since_refused = false;
  // Items that carry credential headers: redirects are followed here,
  // not by curl, so that no hop takes them to another origin.
  bool manage_redirects = false;
  int redirects = 0;   // hops followed so far
  absl::Time started;  // the attempt's start (hops share its timeout)
  // When the attempt's timeout ends it: a curl timeout well before then is
  // the low-speed limit's (Options::min_bytes_per_second).
  absl::Time ends;
  absl::Status redirect_error;  // a hop that may not be followed
  // A hop of this attempt's chain went to another origin: no later hop
  // gets the credential headers, even back on the item's origin (as the
  // Fetch standard drops Authorization for the rest of the chain).
  bool left_origin = false;
  const Engine::Options* options = nullptr;
  // The loop's role, asserted by the curl callbacks.
  const ThreadRole* io_thread = nullptr;
  char error[CURL_ERROR_SIZE] = {};
  // The memory budget (engine_memory.cc): what the attempt holds (its
  // first bytes from admission, then its body's capacity and kept
  // headers); the bytes it needed and could not have (> 0: it fails); and
  // while its body waits for room, how many bytes it waits for, in the
  // loop's queue of paused transfers (`paused`).
  memory::Reservation memory;
  int64_t kept_header_bytes = 0;
  int64_t memory_short = 0;
  int64_t paused_need = 0;
  std::deque<std::pair<uint64_t, size_t>>* paused = nullptr;
};

}  // namespace fetchd::fetch::internal

#endif  // FETCHD_SERVER_FETCH_ENGINE_TRANSFER_H_
