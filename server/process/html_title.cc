// html_title: the first <title> in the document, as a browser would show it.
//
// Bounded by design (#16): gumbo's tree building is quadratic in nesting
// depth (2.2 MB of nested <div> took 4.5 minutes) and its tree is freed
// recursively. So a linear scan of the markup finds the first <title> start
// tag that is the document's (outside comments, raw-text elements such as
// <script>, <svg>/<math> and <template>) in the first kMaxTitleScanBytes,
// and gumbo parses only that element, at most kMaxTitleBytes of it, to
// decode entities. Scanning 1 MiB costs a few ms; a title that starts later
// is not seen (a real page's title is in its <head>, near the top).
#include <gumbo.h>

#include <cstring>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/process/internal.h"
#include "server/process/process.h"

namespace fetchd::process {
namespace {

struct GumboDeleter {
  void operator()(GumboOutput* output) const {
    gumbo_destroy_output(&kGumboDefaultOptions, output);
  }
};

// Gumbo's tree for one <title> element is html > head > title.
const GumboNode* FindTitle(const GumboNode* node) {
  if (node->type != GUMBO_NODE_ELEMENT) return nullptr;
  if (node->v.element.tag == GUMBO_TAG_TITLE) return node;
  const GumboVector& children = node->v.element.children;
  for (unsigned i = 0; i < children.length; ++i) {
    const auto* child = static_cast<const GumboNode*>(children.data[i]);
    if (const GumboNode* found = FindTitle(child)) return found;
  }
  return nullptr;
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

// The HTML tokenizer's view of the markup, enough to tell which <title>
// start tag opens the document's title. Linear: every step moves `pos_`
// forward.
class TitleScanner {
 public:
  explicit TitleScanner(absl::string_view doc) : doc_(doc) {}

  // The offset of the first document <title> start tag, npos if none, or
  // a budget error.
  absl::StatusOr<size_t> Find(CpuBudget& budget) {
    const size_t size = doc_.size();
    for (;;) {
      if (budget.Tick()) return budget.Exhausted("html_title");
      pos_ = doc_.find('<', pos_);
      if (pos_ == absl::string_view::npos || pos_ + 1 >= size) {
        return absl::string_view::npos;
      }
      const size_t tag = pos_;
      const char next = doc_[tag + 1];
      if (absl::ascii_isalpha(next)) {
        const absl::string_view name = TagName(tag + 1);
        const bool self_closing = SkipAttributes();
        if (!name.empty()) {
          if (foreign_ == 0 && templates_ == 0 && name == "title") return tag;
          StartTag(name, self_closing);
        }
      } else if (next == '/') {
        EndTag();
      } else if (next == '!') {
        if (At(tag + 2, "--")) {
          SkipComment();
        } else {
          SkipPast(foreign_ > 0 && At(tag + 2, "[CDATA[") ? "]]>" : ">");
        }
      } else if (next == '?') {
        SkipPast(">");
      } else {
        pos_ = tag + 1;  // a lone '<' is text
      }
      if (pos_ >= size) return absl::string_view::npos;
    }
  }

  // The length of the title element at the start of the scanned text:
  // up to past its end tag, or all of it.
  size_t TitleLength() {
    pos_ = 1;
    (void)TagName(pos_);
    (void)SkipAttributes();
    return RawTextEnd("title");
  }

 private:
  // Whether `word` (lower case) is at `at`, ignoring ASCII case.
  bool At(size_t at, absl::string_view word) const {
    return at <= doc_.size() && doc_.size() - at >= word.size() &&
           absl::EqualsIgnoreCase(doc_.substr(at, word.size()), word);
  }

  void SkipPast(absl::string_view end) {
    const size_t found = doc_.find(end, pos_ + 1);
    pos_ = found == absl::string_view::npos ? doc_.size() : found + end.size();
  }

  // <!--> and <!---> are empty comments; otherwise up to "-->".
  void SkipComment() {
    if (At(pos_ + 4, ">")) {
      pos_ += 5;
    } else if (At(pos_ + 4, "->")) {
      pos_ += 6;
    } else {
      pos_ += 3;
      SkipPast("-->");
    }
  }

  // The tag name starting at `at`, lower-cased into name_buf_ when it can
  // be one of the names that matter (else empty); pos_ moves past it.
  absl::string_view TagName(size_t at) {
    size_t end = at;
    while (end < doc_.size() && !IsSpace(doc_[end]) && doc_[end] != '/' &&
           doc_[end] != '>') {
      ++end;
    }
    pos_ = end;
    const size_t len = end - at;
    // "svg" .. "plaintext"/"template"/"textarea"/"noframes", and their
    // first letters: most tags (div, a, b, td, ...) stop here.
    if (len < 3 || len > 9) return "";
    const char first = absl::ascii_tolower(doc_[at]);
    if (std::strchr("mnpstxi", first) == nullptr) return "";
    for (size_t i = 0; i < len; ++i) {
      name_buf_[i] = absl::ascii_tolower(doc_[at + i]);
    }
    return absl::string_view(name_buf_, len);
  }

  // From just past the name to just past the tag's '>', honouring quoted
  // attribute values. True for a self-closing tag ("/>").
  bool SkipAttributes() {
    bool slash = false;
    while (pos_ < doc_.size()) {
      const char c = doc_[pos_++];
      if (c == '>') return slash;
      slash = c == '/';
      if (c != '=') continue;
      while (pos_ < doc_.size() && IsSpace(doc_[pos_])) ++pos_;
      if (pos_ < doc_.size() && (doc_[pos_] == '"' || doc_[pos_] == '\'')) {
        const size_t close = doc_.find(doc_[pos_], pos_ + 1);
        pos_ = close == absl::string_view::npos ? doc_.size() : close + 1;
      }
    }
    return false;
  }

  // The offset just past the end tag `</name...>` that ends raw text
  // starting at pos_, or the end of the document.
  size_t RawTextEnd(absl::string_view name) {
    for (size_t at = pos_;;) {
      at = doc_.find("</", at);
      if (at == absl::string_view::npos) return doc_.size();
      const size_t after = at + 2 + name.size();
      if (At(at + 2, name) && (after == doc_.size() || IsSpace(doc_[after]) ||
                               doc_[after] == '/' || doc_[after] == '>')) {
        const size_t close = doc_.find('>', after);
        return close == absl::string_view::npos ? doc_.size() : close + 1;
      }
      at += 2;
    }
  }

  void EndTag() {
    if (pos_ + 2 < doc_.size() && absl::ascii_isalpha(doc_[pos_ + 2])) {
      const absl::string_view name = TagName(pos_ + 2);
      (void)SkipAttributes();
      if ((name == "svg" || name == "math") && foreign_ > 0) --foreign_;
      if (name == "template" && templates_ > 0) --templates_;
    } else {
      SkipPast(">");  // "</>" or a bogus comment
    }
  }

  void StartTag(absl::string_view name, bool self_closing) {
    if (name == "svg" || name == "math") {
      if (!self_closing) ++foreign_;
      return;
    }
    if (foreign_ > 0) return;  // no raw text in foreign content
    if (name == "template") {
      ++templates_;
    } else if (name == "plaintext") {
      pos_ = doc_.size();  // the rest is text
    } else if (name == "script" || name == "style" || name == "textarea" ||
               name == "xmp" || name == "iframe" || name == "noembed" ||
               name == "noframes") {
      pos_ = RawTextEnd(name);
    }
  }

  const absl::string_view doc_;
  size_t pos_ = 0;
  int foreign_ = 0;    // open <svg>/<math> elements
  int templates_ = 0;  // open <template> elements
  char name_buf_[9];
};

}  // namespace

absl::StatusOr<std::string> HtmlTitle(absl::string_view body,
                                      CpuBudget& budget) {
  absl::StatusOr<size_t> start =
      TitleScanner(body.substr(0, kMaxTitleScanBytes)).Find(budget);
  if (!start.ok()) return start.status();
  if (*start == absl::string_view::npos) {
    return absl::NotFoundError(
        body.size() > kMaxTitleScanBytes
            ? absl::StrCat("html_title: no <title> starts in the first ",
                           kMaxTitleScanBytes, " bytes of the document")
            : "html_title: the document has no <title>");
  }
  absl::string_view element = body.substr(*start, kMaxTitleBytes);
  element = element.substr(0, TitleScanner(element).TitleLength());
  std::unique_ptr<GumboOutput, GumboDeleter> output(gumbo_parse_with_options(
      &kGumboDefaultOptions, element.data(), element.size()));
  if (output == nullptr) return absl::InternalError("html_title: parse failed");
  const GumboNode* title = FindTitle(output->root);
  if (title == nullptr) {
    return absl::NotFoundError("html_title: the document has no <title>");
  }
  std::string text;
  const GumboVector& children = title->v.element.children;
  for (unsigned i = 0; i < children.length; ++i) {
    const auto* child = static_cast<const GumboNode*>(children.data[i]);
    if (child->type == GUMBO_NODE_TEXT ||
        child->type == GUMBO_NODE_WHITESPACE) {
      text += child->v.text.text;  // entities already decoded
    }
  }
  // Collapse runs of whitespace the way browsers display titles.
  return absl::StrJoin(
      absl::StrSplit(text, absl::ByAnyChar(" \t\r\n\f"), absl::SkipEmpty()),
      " ");
}

}  // namespace fetchd::process
