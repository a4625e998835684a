#include "core/base/sqlite_db.h"

#include <sqlite3.h>

#include <utility>

namespace ipfly {

// --- SqliteDb -----------------------------------------------------------------------------------

Result<SqliteDb> SqliteDb::Open(const std::string& path, std::string label) {
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = raw ? sqlite3_errmsg(raw) : "out of memory";
    sqlite3_close_v2(raw);
    return IoError("open " + label + " " + path + ": " + msg);
  }
  SqliteDb db(raw, std::move(label));
  sqlite3_busy_timeout(raw, 10'000);
  IPFLY_RETURN_IF_ERROR(db.Exec("PRAGMA journal_mode=WAL"));
  IPFLY_RETURN_IF_ERROR(db.Exec("PRAGMA synchronous=FULL"));
  return db;
}

SqliteDb::~SqliteDb() {
  if (db_) sqlite3_close_v2(db_);
}

SqliteDb::SqliteDb(SqliteDb&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), label_(std::move(other.label_)) {}

SqliteDb& SqliteDb::operator=(SqliteDb&& other) noexcept {
  if (this != &other) {
    if (db_) sqlite3_close_v2(db_);
    db_ = std::exchange(other.db_, nullptr);
    label_ = std::move(other.label_);
  }
  return *this;
}

Status SqliteDb::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return IoError(label_ + ": " + msg);
  }
  return OkStatus();
}

Error SqliteDb::Err(std::string_view what) const {
  return IoError(label_ + " " + std::string(what) + ": " + sqlite3_errmsg(db_));
}

int64_t SqliteDb::Changes() const { return sqlite3_changes(db_); }

// --- SqliteStatement ----------------------------------------------------------------------------

SqliteStatement::SqliteStatement(const SqliteDb& db, const char* sql) : db_(&db) {
  if (sqlite3_prepare_v2(db.get(), sql, -1, &st_, nullptr) != SQLITE_OK) {
    sqlite3_finalize(st_);
    st_ = nullptr;
  }
}

SqliteStatement::~SqliteStatement() { sqlite3_finalize(st_); }

SqliteStatement& SqliteStatement::Bind(int i, const std::string& text) {
  sqlite3_bind_text(st_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  return *this;
}

SqliteStatement& SqliteStatement::Bind(int i, int64_t v) {
  sqlite3_bind_int64(st_, i, v);
  return *this;
}

SqliteStatement& SqliteStatement::BindBlob(int i, const std::string& bytes) {
  sqlite3_bind_blob(st_, i, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  return *this;
}

SqliteStatement& SqliteStatement::BindNull(int i) {
  sqlite3_bind_null(st_, i);
  return *this;
}

int SqliteStatement::Step() { return sqlite3_step(st_); }

std::string SqliteStatement::Text(int col) {
  const unsigned char* p = sqlite3_column_text(st_, col);
  int n = sqlite3_column_bytes(st_, col);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}

std::string SqliteStatement::Blob(int col) {
  const void* p = sqlite3_column_blob(st_, col);
  int n = sqlite3_column_bytes(st_, col);
  return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}

int64_t SqliteStatement::Int(int col) { return sqlite3_column_int64(st_, col); }

bool SqliteStatement::IsNull(int col) { return sqlite3_column_type(st_, col) == SQLITE_NULL; }

// --- SqliteTransaction --------------------------------------------------------------------------

SqliteTransaction::SqliteTransaction(const SqliteDb& db) : db_(&db) {
  begun_ = sqlite3_exec(db.get(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK;
}

SqliteTransaction::~SqliteTransaction() {
  if (begun_ && !done_) sqlite3_exec(db_->get(), "ROLLBACK", nullptr, nullptr, nullptr);
}

Status SqliteTransaction::Begun() const {
  if (!begun_) return db_->Err("begin");
  return OkStatus();
}

Status SqliteTransaction::Commit() {
  if (sqlite3_exec(db_->get(), "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return db_->Err("commit");
  }
  done_ = true;
  return OkStatus();
}

}  // namespace ipfly
