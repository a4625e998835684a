#include "snapshotter/filters.h"

#include <gtest/gtest.h>

#include <map>

namespace ipfly::snapshotter {
namespace {

// An object with a few fields and labels, looked up like containerd's snapshot adaptor.
struct Obj {
  std::map<std::string, std::string> fields;
  std::map<std::string, std::string> labels;
  FieldLookup Lookup() const {
    return [this](const std::vector<std::string>& p) -> std::optional<std::string> {
      if (p.empty()) return std::nullopt;
      if (p[0] == "labels") {
        std::string k;
        for (size_t i = 1; i < p.size(); ++i) k += (i > 1 ? "." : "") + p[i];
        auto it = labels.find(k);
        if (it == labels.end()) return std::nullopt;
        return it->second;
      }
      auto it = fields.find(p[0]);
      if (it == fields.end()) return std::nullopt;
      return it->second;
    };
  }
};

bool M(std::string_view filter, const Obj& o) {
  auto f = Filter::Parse(filter);
  EXPECT_TRUE(f.ok()) << filter << ": " << (f.ok() ? "" : f.error().ToString());
  return f.ok() && f->Match(o.Lookup());
}

const Obj kSnap{{{"name", "default/3/sha256:abc"}, {"parent", "p1"}, {"kind", "committed"}},
                {{"containerd.io/snapshot.ref", "sha256:abc"}, {"foo", "bar baz"}, {"a.b", "x"}}};

TEST(FiltersTest, EqualityAndPresence) {
  EXPECT_TRUE(M("", kSnap));
  EXPECT_TRUE(M("kind==committed", kSnap));
  EXPECT_FALSE(M("kind==active", kSnap));
  EXPECT_TRUE(M("kind!=active", kSnap));
  EXPECT_TRUE(M("parent", kSnap));
  EXPECT_FALSE(M("nosuchfield", kSnap));
  EXPECT_TRUE(M("nosuchfield!=x", kSnap));  // absent != value is true, like containerd
  EXPECT_TRUE(M("labels.foo", kSnap));
  EXPECT_FALSE(M("labels.nope", kSnap));
}

TEST(FiltersTest, ContainerdRemoteSnapshotQuery) {
  // Exactly what containerd sends after a remote snapshotter returned ALREADY_EXISTS.
  EXPECT_TRUE(M(R"(labels."containerd.io/snapshot.ref"==sha256:abc,parent=="p1")", kSnap));
  EXPECT_FALSE(M(R"(labels."containerd.io/snapshot.ref"==sha256:abc,parent=="p2")", kSnap));
  EXPECT_FALSE(M(R"(labels."containerd.io/snapshot.ref"==sha256:abd,parent=="p1")", kSnap));
  // containerd formats the parent with Go's %q: an empty parent is "".
  const Obj no_parent{{{"name", "n"}, {"parent", ""}}, {{"containerd.io/snapshot.ref", "r"}}};
  EXPECT_TRUE(M(R"(labels."containerd.io/snapshot.ref"==r,parent=="")", no_parent));
  EXPECT_FALSE(M(R"(labels."containerd.io/snapshot.ref"==r,parent=="x")", no_parent));
  // A dotted label key may also be written as a field path.
  EXPECT_TRUE(M("labels.a.b==x", kSnap));
  EXPECT_TRUE(M(R"(labels."a.b"==x)", kSnap));
}

TEST(FiltersTest, QuotedValuesAndEscapes) {
  EXPECT_TRUE(M(R"(labels.foo=="bar baz")", kSnap));
  EXPECT_TRUE(M(R"(labels.foo=="bar\x20baz")", kSnap));
  EXPECT_TRUE(M(R"(labels.foo=="bar\u0020baz")", kSnap));
  EXPECT_TRUE(M(R"(labels.foo=="bar\040baz")", kSnap));
  EXPECT_TRUE(M(R"(name==default/3/sha256:abc)", kSnap));  // unquoted value with / and :
  EXPECT_TRUE(M("  kind == committed ", kSnap));           // white space around tokens
}

TEST(FiltersTest, RegexMatch) {
  EXPECT_TRUE(M("name~=sha256", kSnap));  // unanchored search
  EXPECT_TRUE(M("name~=^default/[0-9]+/", kSnap));
  EXPECT_FALSE(M("name~=^sha256", kSnap));
  EXPECT_TRUE(M("labels.foo~=/bar.baz$/", kSnap));  // '/' quotes allowed for ~=
  EXPECT_TRUE(M("labels.foo~=|^bar|", kSnap));      // '|' quotes allowed for ~=
  EXPECT_FALSE(M("name~=[", kSnap));                // invalid pattern never matches
}

TEST(FiltersTest, ConjunctionAndDisjunction) {
  EXPECT_TRUE(M("kind==committed,parent==p1", kSnap));
  EXPECT_FALSE(M("kind==committed,parent==p2", kSnap));
  auto fs = Filter::ParseAll({"kind==active", "parent==p1"});
  ASSERT_TRUE(fs.ok());
  EXPECT_TRUE(Filter::MatchAny(*fs, kSnap.Lookup()));
  fs = Filter::ParseAll({"kind==active", "parent==p2"});
  ASSERT_TRUE(fs.ok());
  EXPECT_FALSE(Filter::MatchAny(*fs, kSnap.Lookup()));
  fs = Filter::ParseAll({});
  ASSERT_TRUE(fs.ok());
  EXPECT_TRUE(Filter::MatchAny(*fs, kSnap.Lookup()));
}

TEST(FiltersTest, RejectsMalformedFilters) {
  for (const char* bad : {"kind==", "kind===x", "kind=x", ",kind==x", "kind==x,", "kind==x y",
                          R"(labels."unterminated==x)", R"(labels.foo=="\q")", "labels.foo==/bar/",
                          "labels.|x|==y", "kind==x,,parent==y", ".kind"}) {
    auto f = Filter::Parse(bad);
    EXPECT_FALSE(f.ok()) << "accepted: " << bad;
    if (!f.ok()) {
      EXPECT_EQ(f.error().code(), Errc::kInvalidArgument) << bad;
    }
  }
}

}  // namespace
}  // namespace ipfly::snapshotter
