#!/usr/bin/python3
"""scripts/protoc-gen-fetchd-doc on tests/api_doc/fixture.proto, and the
links of the checked-in docs/api.md.

The plugin gets the CodeGeneratorRequest that buf would send, built here
from protoc's descriptor set (with source info), so this test needs neither
buf nor the network. Run by ctest (ApiDocGenerator) with Debian's python3.
"""

import os
import re
import subprocess
import sys
import tempfile
import unittest

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PLUGIN = os.path.join(ROOT, "scripts", "protoc-gen-fetchd-doc")
TIMEOUT_S = 60


def run_plugin(parameter=""):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "fixture.pb")
        subprocess.run(
            ["protoc", "--include_source_info", "--include_imports",
             "-o", out, "-I", HERE, "fixture.proto"],
            check=True, timeout=TIMEOUT_S)
        with open(out, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    request = plugin_pb2.CodeGeneratorRequest(
        file_to_generate=["fixture.proto"], parameter=parameter,
        proto_file=fds.file)
    done = subprocess.run([PLUGIN], input=request.SerializeToString(),
                          capture_output=True, check=True, timeout=TIMEOUT_S)
    return plugin_pb2.CodeGeneratorResponse.FromString(done.stdout)


def anchors_and_links(text):
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', text))
    # The Contents' section links point at GitHub's heading anchors.
    anchors |= {"services", "messages", "enums"}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    return anchors, links


class FixtureTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        response = run_plugin()
        assert not response.error, response.error
        assert len(response.file) == 1, [f.name for f in response.file]
        cls.name = response.file[0].name
        cls.md = response.file[0].content

    def section(self, heading):
        start = self.md.index("\n### %s\n" % heading)
        end = self.md.find("\n### ", start + 1)
        return self.md[start:end if end >= 0 else len(self.md)]

    def test_one_file_named_api_md(self):
        self.assertEqual(self.name, "api.md")

    def test_services_then_messages_then_enums(self):
        order = [self.md.index("\n## %s\n" % s)
                 for s in ("Services", "Messages", "Enums")]
        self.assertEqual(order, sorted(order))
        self.assertLess(self.md.index("### fixture.v1.Greeter"),
                        self.md.index("### fixture.v1.HelloRequest"))
        self.assertLess(self.md.index("### fixture.v1.Echo"),
                        self.md.index("### fixture.v1.HelloRequest.Level"))

    def test_rpcs_with_method_path_streaming_and_links(self):
        greeter = self.section("fixture.v1.Greeter")
        self.assertIn("- Method: `/fixture.v1.Greeter/Hello`, unary", greeter)
        self.assertIn(
            "- Request: [`fixture.v1.HelloRequest`](#fixture-v1-hellorequest)",
            greeter)
        self.assertIn("- Method: `/fixture.v1.Greeter/Words`, server streaming",
                      greeter)
        self.assertIn(
            "- Response: stream of [`fixture.v1.Echo`](#fixture-v1-echo)", greeter)
        self.assertIn("bidirectional streaming", greeter)
        self.assertIn("- Request: stream of [`fixture.v1.Echo`]", greeter)
        self.assertIn("Streams one Echo per word.", greeter)

    def test_indented_comment_lines_keep_their_layout(self):
        greeter = self.section("fixture.v1.Greeter")
        self.assertIn("Says hello. Errors:\n\n```text\n"
                      "INVALID_ARGUMENT  name is empty\n"
                      "NOT_FOUND         no such person\n```", greeter)

    def test_field_table_types_labels_and_comments(self):
        req = self.section("fixture.v1.HelloRequest")
        rows = {line.split("|")[1].strip(): line for line in req.splitlines()
                if line.startswith("| `")}
        self.assertEqual(
            list(rows), ["`name`", "`timeout`", "`times`", "`by_name`",
                         "`formal`", "`casual`"])
        self.assertEqual(
            rows["`name`"],
            "| `name` | 1 | `string` |  | who; a \\| and a &lt;title&gt; stay text |")
        self.assertEqual(
            rows["`timeout`"],
            "| `timeout` | 2 | `google.protobuf.Duration` |  |"
            " Per greeting; unset = 1 s. |")
        self.assertIn("| `times` | 3 | `int32` | optional | unset = 1 |",
                      rows["`times`"])
        self.assertEqual(
            rows["`by_name`"],
            "| `by_name` | 4 | map&lt;`string`, [`fixture.v1.Echo`]"
            "(#fixture-v1-echo)&gt; | map | keyed by name |")
        self.assertIn("| oneof `style` | Formal. |", rows["`formal`"])
        # The map's entry type is not a message of the API.
        self.assertNotIn("ByNameEntry", self.md)

    def test_enum_table_and_nested_names(self):
        level = self.section("fixture.v1.HelloRequest.Level")
        self.assertIn("Loudness.", level)
        self.assertIn("| `LEVEL_UNSPECIFIED` | 0 | normal |", level)
        self.assertIn("| `LEVEL_LOUD` | 1 |  |", level)
        inner = self.section("fixture.v1.HelloRequest.Inner")
        self.assertIn(
            "[`fixture.v1.HelloRequest.Level`](#fixture-v1-hellorequest-level)",
            inner)

    def test_every_link_has_its_anchor(self):
        anchors, links = anchors_and_links(self.md)
        self.assertTrue(links)
        self.assertEqual(links - anchors, set())

    def test_same_input_same_bytes(self):
        self.assertEqual(run_plugin().file[0].content, self.md)


class CheckCommentsTest(unittest.TestCase):

    def test_lists_each_element_without_a_comment(self):
        response = run_plugin("check_comments")
        self.assertEqual(len(response.file), 0)
        lines = response.error.splitlines()
        self.assertIn("3 element(s) of the API have no comment", lines[0])
        self.assertEqual(lines[1:], [
            "protos/fixture.proto:17: rpc fixture.v1.Greeter.Chat",
            "protos/fixture.proto:30: field fixture.v1.HelloRequest.casual",
            "protos/fixture.proto:40: enum value"
            " fixture.v1.HelloRequest.Level.LEVEL_LOUD",
        ])

    def test_unknown_option_fails(self):
        self.assertIn("unknown option(s): verbose", run_plugin("verbose").error)


class CheckedInDocTest(unittest.TestCase):

    def test_every_link_of_docs_api_md_has_its_anchor(self):
        with open(os.path.join(ROOT, "docs", "api.md")) as f:
            text = f.read()
        anchors, links = anchors_and_links(text)
        self.assertGreater(len(links), 50)
        self.assertEqual(links - anchors, set())
        self.assertFalse([l for l in text.splitlines() if l != l.rstrip()],
                         "trailing whitespace")


if __name__ == "__main__":
    sys.exit(unittest.main(verbosity=2))
