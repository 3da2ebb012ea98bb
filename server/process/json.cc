// json_pointer and json_validate on nlohmann-json. The library reports some
// errors by exception; they are caught here and never leave the module.
//
// Documents come from origins, so parsing is bounded (#16): a SAX handler
// refuses nesting deeper than kMaxJsonDepth and checks the CPU budget while
// the (iterative) parser runs, before any recursive code (dump()) sees the
// tree. nlohmann's destructor is iterative too.
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/process/internal.h"
#include "server/process/process.h"

namespace fetchd::process {
namespace {

using Json = nlohmann::json;

// Forwards SAX events to `Inner` (a DOM builder or an acceptor) and stops
// the parse (returns false) past kMaxJsonDepth or once the budget is spent.
template <typename Inner>
class BoundedSax {
 public:
  using number_integer_t = Json::number_integer_t;
  using number_unsigned_t = Json::number_unsigned_t;
  using number_float_t = Json::number_float_t;
  using string_t = Json::string_t;
  using binary_t = Json::binary_t;

  BoundedSax(Inner& inner, CpuBudget& budget)
      : inner_(inner), budget_(budget) {}

  enum class Stop { kNone, kDepth, kBudget, kSyntax };
  Stop stop() const { return stop_; }
  size_t error_byte() const { return error_byte_; }

  bool null() { return Tick() && inner_.null(); }
  bool boolean(bool v) { return Tick() && inner_.boolean(v); }
  bool number_integer(number_integer_t v) {
    return Tick() && inner_.number_integer(v);
  }
  bool number_unsigned(number_unsigned_t v) {
    return Tick() && inner_.number_unsigned(v);
  }
  bool number_float(number_float_t v, const string_t& s) {
    return Tick() && inner_.number_float(v, s);
  }
  bool string(string_t& v) { return Tick() && inner_.string(v); }
  bool binary(binary_t& v) { return Tick() && inner_.binary(v); }
  bool key(string_t& v) { return Tick() && inner_.key(v); }
  bool start_object(std::size_t n) { return Enter() && inner_.start_object(n); }
  bool start_array(std::size_t n) { return Enter() && inner_.start_array(n); }
  bool end_object() {
    --depth_;
    return inner_.end_object();
  }
  bool end_array() {
    --depth_;
    return inner_.end_array();
  }
  bool parse_error(std::size_t position, const std::string& /*token*/,
                   const nlohmann::detail::exception& /*ex*/) {
    stop_ = Stop::kSyntax;
    error_byte_ = position;
    return false;
  }

 private:
  bool Tick() {
    if (!budget_.Tick()) return true;
    stop_ = Stop::kBudget;
    return false;
  }
  bool Enter() {
    if (++depth_ > kMaxJsonDepth) {
      stop_ = Stop::kDepth;
      return false;
    }
    return Tick();
  }

  Inner& inner_;
  CpuBudget& budget_;
  int depth_ = 0;
  Stop stop_ = Stop::kNone;
  size_t error_byte_ = 0;
};

// The error for a parse that `sax` stopped, or OK.
template <typename Sax>
absl::Status StopStatus(const Sax& sax, const CpuBudget& budget,
                        const char* processor) {
  switch (sax.stop()) {
    case Sax::Stop::kNone:
      return absl::OkStatus();
    case Sax::Stop::kDepth:
      return absl::FailedPreconditionError(absl::StrCat(
          processor, ": the body nests arrays and objects deeper than ",
          kMaxJsonDepth, " levels, the limit"));
    case Sax::Stop::kBudget:
      return budget.Exhausted(processor);
    case Sax::Stop::kSyntax:
      break;
  }
  return absl::FailedPreconditionError(
      absl::StrCat(processor, ": the body is not valid JSON (error at byte ",
                   sax.error_byte(), ")"));
}

}  // namespace

absl::Status ValidateJsonPointer(absl::string_view pointer) {
  try {
    Json::json_pointer parsed{std::string(pointer)};
    (void)parsed;
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "process.json_pointer \"", pointer,
        "\" is not an RFC 6901 pointer (it must be empty or start with '/', "
        "and '~' must be followed by 0 or 1)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> JsonPointer(absl::string_view pointer,
                                        absl::string_view body,
                                        CpuBudget& budget) {
  Json doc;
  nlohmann::detail::json_sax_dom_parser<Json> builder(
      doc, /*allow_exceptions_=*/false);
  BoundedSax sax(builder, budget);
  if (!Json::sax_parse(body.begin(), body.end(), &sax) ||
      sax.stop() != decltype(sax)::Stop::kNone) {
    absl::Status stopped = StopStatus(sax, budget, "json_pointer");
    if (!stopped.ok()) return stopped;
    return absl::FailedPreconditionError(
        "json_pointer: the body is not valid JSON");
  }
  try {
    const Json::json_pointer parsed{std::string(pointer)};
    if (!doc.contains(parsed)) {
      return absl::NotFoundError(
          absl::StrCat("json_pointer: no value at \"", pointer, "\""));
    }
    // dump() recurses once per level: safe, the depth is bounded above.
    std::string out = doc.at(parsed).dump();
    if (budget.Check()) return budget.Exhausted("json_pointer");
    return out;
  } catch (const Json::exception& e) {
    return absl::NotFoundError(absl::StrCat("json_pointer: no value at \"",
                                            pointer, "\" (", e.what(), ")"));
  }
}

absl::StatusOr<std::string> JsonValidate(absl::string_view body,
                                         CpuBudget& budget) {
  nlohmann::detail::json_sax_acceptor<Json> acceptor;
  BoundedSax sax(acceptor, budget);
  if (Json::sax_parse(body.begin(), body.end(), &sax) &&
      sax.stop() == decltype(sax)::Stop::kNone) {
    return std::string("valid");
  }
  absl::Status stopped = StopStatus(sax, budget, "json_validate");
  if (!stopped.ok()) return stopped;
  return absl::FailedPreconditionError("json_validate: invalid JSON");
}

}  // namespace fetchd::process
