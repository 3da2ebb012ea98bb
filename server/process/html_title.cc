// html_title: the first <title> in the document, as a browser would show it.
#include <gumbo.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/process/internal.h"

namespace fetchd::process {
namespace {

struct GumboDeleter {
  void operator()(GumboOutput* output) const {
    gumbo_destroy_output(&kGumboDefaultOptions, output);
  }
};

const GumboNode* FindTitle(const GumboNode* node) {
  if (node->type != GUMBO_NODE_ELEMENT) return nullptr;
  if (node->v.element.tag == GUMBO_TAG_TITLE) return node;
  // <svg><title> is not the document title.
  if (node->v.element.tag == GUMBO_TAG_SVG) return nullptr;
  const GumboVector& children = node->v.element.children;
  for (unsigned i = 0; i < children.length; ++i) {
    const auto* child = static_cast<const GumboNode*>(children.data[i]);
    if (const GumboNode* found = FindTitle(child)) return found;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<std::string> HtmlTitle(absl::string_view body) {
  std::unique_ptr<GumboOutput, GumboDeleter> output(gumbo_parse_with_options(
      &kGumboDefaultOptions, body.data(), body.size()));
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
