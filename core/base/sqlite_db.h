// A thin RAII layer over SQLite for ipfly's crash-safe stores (the registry catalog, the
// snapshotter's metadata): one connection, prepared statements and BEGIN IMMEDIATE transactions.
//
// Every error is kIo and names the database by the label given to SqliteDb::Open, in one of these
// forms (stores rely on them staying stable):
//   "open <label> <path>: <sqlite message>"     opening failed
//   "<label>: <sqlite message>"                 SqliteDb::Exec failed
//   "<label> <what>: <sqlite3_errmsg>"          SqliteDb::Err / SqliteStatement::Err(what)
//   "<label> begin: …", "<label> commit: …"     SqliteTransaction
//
// Thread safety: the connection is opened in SQLite's serialized mode (SQLITE_OPEN_FULLMUTEX), but
// sqlite3_errmsg and sqlite3_changes describe the connection's last call, so a store that wants
// meaningful errors serializes its use of one SqliteDb itself (both stores hold a mutex).
// Statements and transactions borrow the SqliteDb and must not outlive it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "core/base/result.h"

struct sqlite3;
struct sqlite3_stmt;

namespace ipfly {

// One open database connection, closed on destruction. Move-only.
class SqliteDb {
 public:
  // Opens or creates `path` read-write with busy_timeout 10 s, journal_mode=WAL and
  // synchronous=FULL, so that every committed transaction survives a crash or power loss.
  // `label` names the database in error messages ("catalog", "metadata").
  static Result<SqliteDb> Open(const std::string& path, std::string label);

  SqliteDb() = default;
  ~SqliteDb();
  SqliteDb(SqliteDb&& other) noexcept;
  SqliteDb& operator=(SqliteDb&& other) noexcept;
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  // Runs one or more SQL statements that return no rows (schema, PRAGMAs).
  // Error: kIo "<label>: <message>".
  Status Exec(const char* sql);

  // kIo "<label> <what>: <sqlite3_errmsg>" for the connection's last failure.
  Error Err(std::string_view what) const;

  // Rows changed by the last INSERT/UPDATE/DELETE on this connection.
  int64_t Changes() const;

  sqlite3* get() const { return db_; }
  const std::string& label() const { return label_; }

 private:
  SqliteDb(sqlite3* db, std::string label) : db_(db), label_(std::move(label)) {}

  sqlite3* db_ = nullptr;
  std::string label_;
};

// A prepared statement, finalized on destruction. Check prepared() before use: binding or stepping
// an unprepared statement is harmless but fails (Step returns SQLITE_MISUSE).
class SqliteStatement {
 public:
  SqliteStatement(const SqliteDb& db, const char* sql);
  ~SqliteStatement();
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  bool prepared() const { return st_ != nullptr; }

  // Parameters are 1-based; values are copied (SQLITE_TRANSIENT).
  SqliteStatement& Bind(int i, const std::string& text);
  SqliteStatement& Bind(int i, int64_t v);
  SqliteStatement& BindBlob(int i, const std::string& bytes);
  SqliteStatement& BindNull(int i);

  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step();

  // Columns of the current row (0-based). NULL reads as "" / 0.
  std::string Text(int col);
  std::string Blob(int col);
  int64_t Int(int col);
  bool IsNull(int col);

  // Same as the database's Err(what).
  Error Err(std::string_view what) const { return db_->Err(what); }

 private:
  const SqliteDb* db_;
  sqlite3_stmt* st_ = nullptr;
};

// BEGIN IMMEDIATE on construction; rolled back on destruction unless Commit() succeeded.
class SqliteTransaction {
 public:
  explicit SqliteTransaction(const SqliteDb& db);
  ~SqliteTransaction();
  SqliteTransaction(const SqliteTransaction&) = delete;
  SqliteTransaction& operator=(const SqliteTransaction&) = delete;

  // OK if BEGIN succeeded, else kIo "<label> begin: <sqlite3_errmsg>".
  Status Begun() const;
  bool ok() const { return begun_; }
  // kIo "<label> commit: <sqlite3_errmsg>" on failure (the destructor then rolls back).
  Status Commit();

 private:
  const SqliteDb* db_;
  bool begun_ = false;
  bool done_ = false;
};

}  // namespace ipfly
