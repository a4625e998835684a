#include "snapshotter/metadata_store.h"

#include <gtest/gtest.h>

#include "tests/support/process.h"

namespace ipfly::snapshotter {
namespace {

using ipfly::testing::TempDir;

MetadataStore::CreateParams P(Kind kind, std::string key, std::string parent = "",
                              Labels labels = {}) {
  MetadataStore::CreateParams p;
  p.kind = kind;
  p.key = std::move(key);
  p.parent = std::move(parent);
  p.labels = std::move(labels);
  return p;
}

TEST(MetadataStoreTest, CreateCommitChainRemove) {
  TempDir tmp;
  auto ms = MetadataStore::Open(tmp / "m.db");
  ASSERT_TRUE(ms.ok()) << ms.error().ToString();
  auto& s = **ms;
  auto a = s.Create(P(Kind::kActive, "a", "", {{"x", "1"}, {"empty", ""}}), nullptr);
  ASSERT_TRUE(a.ok()) << a.error().ToString();
  EXPECT_EQ(a->labels, (Labels{{"x", "1"}}));  // empty values are dropped
  EXPECT_EQ(a->created_ns, a->updated_ns);
  // Parent must exist and be committed.
  EXPECT_EQ(s.Create(P(Kind::kActive, "b", "nope"), nullptr).error().code(), Errc::kNotFound);
  EXPECT_EQ(s.Create(P(Kind::kActive, "b", "a"), nullptr).error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(s.Create(P(Kind::kView, "a"), nullptr).error().code(), Errc::kAlreadyExists);

  auto c = s.Commit("a", "c1", 4096, 3, {{"y", "2"}});
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  EXPECT_EQ(c->id, a->id);  // the id (and so the directory) is kept
  EXPECT_EQ(c->kind, Kind::kCommitted);
  EXPECT_EQ(s.Get("a").error().code(), Errc::kNotFound);
  EXPECT_EQ(s.Commit("c1", "c2", 0, 0, {}).error().code(), Errc::kFailedPrecondition);

  auto child = s.Create(P(Kind::kActive, "b", "c1"), nullptr);
  ASSERT_TRUE(child.ok());
  ASSERT_TRUE(s.Commit("b", "c2", 0, 0, {}).ok());
  EXPECT_EQ(s.Commit("x", "c2", 0, 0, {}).error().code(), Errc::kAlreadyExists);
  auto v = s.Create(P(Kind::kView, "v", "c2"), nullptr);
  ASSERT_TRUE(v.ok());
  auto chain = s.Chain("c2");
  ASSERT_TRUE(chain.ok());
  ASSERT_EQ(chain->size(), 2u);
  EXPECT_EQ((*chain)[0].key, "c2");  // nearest first
  EXPECT_EQ((*chain)[1].key, "c1");

  EXPECT_EQ(s.Remove("c1").error().code(), Errc::kFailedPrecondition);  // has a child
  EXPECT_EQ(s.Remove("nope").error().code(), Errc::kNotFound);
  ASSERT_TRUE(s.Remove("v").ok());
  ASSERT_TRUE(s.Remove("c2").ok());
  ASSERT_TRUE(s.Remove("c1").ok());
  EXPECT_TRUE(s.List()->empty());
  // Ids are never reused.
  auto again = s.Create(P(Kind::kActive, "a"), nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_GT(again->id, v->id);
}

TEST(MetadataStoreTest, UpdateLabelsLikeContainerd) {
  TempDir tmp;
  auto s = std::move(*MetadataStore::Open(tmp / "m.db"));
  ASSERT_TRUE(s->Create(P(Kind::kActive, "a", "", {{"l1", "v1"}, {"l2", "v2"}}), nullptr).ok());
  auto u = s->UpdateLabels("a", {{"l1", "new"}, {"l4", "v4"}}, {"labels.l1", "labels.l2"});
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->labels, (Labels{{"l1", "new"}}));
  EXPECT_GT(u->updated_ns, u->created_ns);
  u = s->UpdateLabels("a", {{"z", "1"}}, {});
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->labels, (Labels{{"z", "1"}}));
  u = s->UpdateLabels("a", {{"q", "2"}}, {"labels"});
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->labels, (Labels{{"q", "2"}}));
  EXPECT_EQ(s->UpdateLabels("a", {}, {"parent"}).error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(s->UpdateLabels("zz", {}, {}).error().code(), Errc::kNotFound);
}

TEST(MetadataStoreTest, BeforeCommitFailureRollsBack) {
  TempDir tmp;
  auto s = std::move(*MetadataStore::Open(tmp / "m.db"));
  auto r = s->Create(P(Kind::kActive, "a"),
                     [](const SnapshotRecord&) -> Status { return IoError("disk full"); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(s->Get("a").error().code(), Errc::kNotFound);
  EXPECT_TRUE(s->Create(P(Kind::kActive, "a"), nullptr).ok());
}

TEST(MetadataStoreTest, SurvivesReopenWithLazyFields) {
  TempDir tmp;
  int64_t id = 0;
  {
    auto s = std::move(*MetadataStore::Open(tmp / "m.db"));
    ASSERT_TRUE(s->Create(P(Kind::kActive, "base"), nullptr).ok());
    ASSERT_TRUE(s->Commit("base", "c1", 10, 2, {{"k", "v"}}).ok());
    auto rid = s->ReserveId();
    ASSERT_TRUE(rid.ok());
    auto p = P(Kind::kCommitted, "sha256:chain", "c1", {{"containerd.io/snapshot.ref", "x"}});
    p.id = *rid;
    p.lazy = RemoteLayer{"bafyblob", "bafyindex", "sha256:d", 1234, "ipfly-labels"};
    auto r = s->Create(p, nullptr);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ(r->id, *rid);
    id = r->id;
    // A lazy snapshot must be committed.
    auto bad = P(Kind::kActive, "l2");
    bad.lazy = RemoteLayer{};
    EXPECT_FALSE(s->Create(bad, nullptr).ok());
  }
  auto s = std::move(*MetadataStore::Open(tmp / "m.db"));
  auto c1 = s->Get("c1");
  ASSERT_TRUE(c1.ok());
  EXPECT_EQ(c1->size, 10);
  EXPECT_EQ(c1->inodes, 2);
  EXPECT_EQ(c1->labels, (Labels{{"k", "v"}}));
  auto l = s->Get("sha256:chain");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->id, id);
  EXPECT_EQ(l->parent, "c1");
  ASSERT_TRUE(l->lazy.has_value());
  EXPECT_EQ(l->lazy->blob_cid, "bafyblob");
  EXPECT_EQ(l->lazy->index_cid, "bafyindex");
  EXPECT_EQ(l->lazy->digest, "sha256:d");
  EXPECT_EQ(l->lazy->size, 1234u);
  EXPECT_EQ(l->lazy->resolved_by, "ipfly-labels");
  EXPECT_FALSE(c1->lazy.has_value());
  auto next = s->ReserveId();
  ASSERT_TRUE(next.ok());
  EXPECT_GT(*next, id);
}

}  // namespace
}  // namespace ipfly::snapshotter
