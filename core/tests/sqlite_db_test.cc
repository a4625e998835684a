// SqliteDb / SqliteStatement / SqliteTransaction: open settings, errors, rollback, RAII.
#include "core/base/sqlite_db.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

namespace ipfly {
namespace {

class SqliteDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ipfly-sqlite-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/test.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_;
  std::string path_;
};

std::string PragmaText(const SqliteDb& db, const char* sql) {
  SqliteStatement s(db, sql);
  EXPECT_TRUE(s.prepared());
  EXPECT_EQ(s.Step(), SQLITE_ROW);
  return s.Text(0);
}

TEST_F(SqliteDbTest, OpensWithWalFullSyncAndBusyTimeout) {
  auto db = SqliteDb::Open(path_, "test");
  ASSERT_TRUE(db.ok()) << db.error().ToString();
  EXPECT_EQ(db->label(), "test");
  EXPECT_EQ(PragmaText(*db, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(PragmaText(*db, "PRAGMA synchronous"), "2");  // FULL
  EXPECT_EQ(PragmaText(*db, "PRAGMA busy_timeout"), "10000");
}

TEST_F(SqliteDbTest, OpenErrorNamesLabelAndPath) {
  auto db = SqliteDb::Open(dir_ + "/missing/dir/x.db", "catalog");
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.error().code(), Errc::kIo);
  EXPECT_EQ(db.error().message().rfind("open catalog " + dir_ + "/missing/dir/x.db: ", 0), 0u)
      << db.error().message();
}

TEST_F(SqliteDbTest, ExecStatementsAndErrors) {
  SqliteDb db = std::move(SqliteDb::Open(path_, "metadata")).value();
  ASSERT_TRUE(db.Exec("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, b BLOB, z TEXT)").ok());
  auto bad = db.Exec("NOT SQL");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kIo);
  EXPECT_EQ(bad.error().message().rfind("metadata: ", 0), 0u) << bad.error().message();

  {
    SqliteStatement ins(db, "INSERT INTO t (k, n, b, z) VALUES (?1, ?2, ?3, ?4)");
    ASSERT_TRUE(ins.prepared());
    ins.Bind(1, std::string("a")).Bind(2, int64_t{42}).BindBlob(3, std::string("x\0y", 3));
    ins.BindNull(4);
    EXPECT_EQ(ins.Step(), SQLITE_DONE);
    EXPECT_EQ(db.Changes(), 1);
  }
  SqliteStatement sel(db, "SELECT k, n, b, z FROM t");
  ASSERT_TRUE(sel.prepared());
  ASSERT_EQ(sel.Step(), SQLITE_ROW);
  EXPECT_EQ(sel.Text(0), "a");
  EXPECT_EQ(sel.Int(1), 42);
  EXPECT_EQ(sel.Blob(2), std::string("x\0y", 3));
  EXPECT_TRUE(sel.IsNull(3));
  EXPECT_EQ(sel.Text(3), "");
  EXPECT_EQ(sel.Step(), SQLITE_DONE);

  SqliteStatement broken(db, "SELECT nope FROM t");
  EXPECT_FALSE(broken.prepared());
  Error e = broken.Err("list");
  EXPECT_EQ(e.code(), Errc::kIo);
  EXPECT_EQ(e.message(), "metadata list: no such column: nope");
}

TEST_F(SqliteDbTest, TransactionRollsBackUnlessCommitted) {
  SqliteDb db = std::move(SqliteDb::Open(path_, "test")).value();
  ASSERT_TRUE(db.Exec("CREATE TABLE t (n INTEGER)").ok());
  auto count = [&] {
    SqliteStatement s(db, "SELECT count(*) FROM t");
    EXPECT_EQ(s.Step(), SQLITE_ROW);
    return s.Int(0);
  };
  {
    SqliteTransaction t(db);
    ASSERT_TRUE(t.Begun().ok());
    ASSERT_TRUE(db.Exec("INSERT INTO t VALUES (1)").ok());
  }  // not committed: rolled back
  EXPECT_EQ(count(), 0);
  {
    SqliteTransaction t(db);
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(db.Exec("INSERT INTO t VALUES (2)").ok());
    ASSERT_TRUE(t.Commit().ok());
  }
  EXPECT_EQ(count(), 1);
  {
    SqliteTransaction outer(db);
    ASSERT_TRUE(outer.Begun().ok());
    SqliteTransaction nested(db);  // SQLite has no nested BEGIN
    auto st = nested.Begun();
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().message().rfind("test begin: ", 0), 0u) << st.error().message();
  }
  // The data survives reopening (and moving) the connection.
  SqliteDb moved = std::move(db);
  moved = std::move(SqliteDb::Open(path_, "test")).value();
  SqliteStatement s(moved, "SELECT n FROM t");
  ASSERT_EQ(s.Step(), SQLITE_ROW);
  EXPECT_EQ(s.Int(0), 2);
}

}  // namespace
}  // namespace ipfly
