#include "snapshotter/filters.h"

#include <re2/re2.h>

#include <cctype>
#include <cstdint>

namespace ipfly::snapshotter {
namespace {

enum class Tok { kEof, kQuoted, kValue, kField, kSeparator, kOperator, kIllegal, kOther };

struct Token {
  Tok tok;
  size_t pos;
  std::string_view text;
};

bool IsFieldChar(char c) {
  return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool IsQuoteChar(char c) { return c == '"' || c == '/' || c == '|'; }
bool IsOperatorChar(char c) { return c == '=' || c == '!' || c == '~'; }
bool IsSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }
// A value runs until a comma or white space (any other printable byte, UTF-8 included).
bool IsValueChar(char c) {
  auto u = static_cast<unsigned char>(c);
  return c != ',' && !IsSpace(c) && (u >= 0x21);
}
int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return 16;
}

// Tokenizer. After an operator the next unquoted token is read as a value (which may contain
// '.', '=' and so on); otherwise as a field.
class Scanner {
 public:
  explicit Scanner(std::string_view in) : in_(in) {}

  // The next raw character without consuming it; '\0' at the end.
  char Peek(bool skip_space = false) const {
    size_t p = pos_;
    if (skip_space) {
      while (p < in_.size() && IsSpace(in_[p])) ++p;
    }
    return p < in_.size() ? in_[p] : '\0';
  }
  bool AtEnd(bool skip_space = false) const {
    size_t p = pos_;
    if (skip_space) {
      while (p < in_.size() && IsSpace(in_[p])) ++p;
    }
    return p >= in_.size();
  }
  size_t pos() const { return pos_; }
  const std::string& err() const { return err_; }

  Token Scan() {
    while (pos_ < in_.size() && IsSpace(in_[pos_])) ++pos_;
    size_t start = pos_;
    if (pos_ >= in_.size()) return {Tok::kEof, start, {}};
    char c = in_[pos_];
    if (c == '\0') {
      err_ = "unexpected null";
      ++pos_;
      return {Tok::kIllegal, start, in_.substr(start, 1)};
    }
    if (IsQuoteChar(c)) {
      bool ok = ScanQuoted(c);
      return {ok ? Tok::kQuoted : Tok::kIllegal, start, in_.substr(start, pos_ - start)};
    }
    if (c == ',' || c == '.') {
      ++pos_;
      value_mode_ = false;
      return {Tok::kSeparator, start, in_.substr(start, 1)};
    }
    if (IsOperatorChar(c)) {
      while (pos_ < in_.size() && IsOperatorChar(in_[pos_])) ++pos_;
      value_mode_ = true;
      return {Tok::kOperator, start, in_.substr(start, pos_ - start)};
    }
    if (value_mode_ && IsValueChar(c)) {
      while (pos_ < in_.size() && IsValueChar(in_[pos_])) ++pos_;
      value_mode_ = false;
      return {Tok::kValue, start, in_.substr(start, pos_ - start)};
    }
    if (IsFieldChar(c)) {
      while (pos_ < in_.size() && IsFieldChar(in_[pos_])) ++pos_;
      return {Tok::kField, start, in_.substr(start, pos_ - start)};
    }
    ++pos_;
    return {Tok::kOther, start, in_.substr(start, 1)};
  }

 private:
  // Consumes a quoted literal starting at pos_ (the quote). Checks escapes; false if illegal or
  // not terminated (err_ says why).
  bool ScanQuoted(char quote) {
    ++pos_;
    bool legal = true;
    while (true) {
      if (pos_ >= in_.size() || in_[pos_] == '\n') {
        err_ = "quoted literal not terminated";
        return false;
      }
      char c = in_[pos_++];
      if (c == quote) return legal;
      if (c != '\\') continue;
      if (pos_ >= in_.size()) {
        err_ = "quoted literal not terminated";
        return false;
      }
      char e = in_[pos_++];
      int digits = 0, base = 16;
      switch (e) {
        case 'a':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
        case 'v':
        case '\\':
          break;
        case 'x':
          digits = 2;
          break;
        case 'u':
          digits = 4;
          break;
        case 'U':
          digits = 8;
          break;
        default:
          if (e == quote) break;
          if (e >= '0' && e <= '7') {
            digits = 2;
            base = 8;
            break;
          }
          if (err_.empty()) err_ = "illegal escape sequence";
          legal = false;
      }
      for (int i = 0; i < digits; ++i) {
        if (pos_ >= in_.size() || HexVal(in_[pos_]) >= base) {
          if (err_.empty()) err_ = "illegal numeric escape sequence";
          legal = false;
          break;
        }
        ++pos_;
      }
    }
  }

  std::string_view in_;
  size_t pos_ = 0;
  bool value_mode_ = false;
  std::string err_;
};

void AppendUtf8(std::string& out, uint32_t r) {
  if (r < 0x80) {
    out += static_cast<char>(r);
  } else if (r < 0x800) {
    out += static_cast<char>(0xC0 | (r >> 6));
    out += static_cast<char>(0x80 | (r & 0x3F));
  } else if (r < 0x10000) {
    out += static_cast<char>(0xE0 | (r >> 12));
    out += static_cast<char>(0x80 | ((r >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (r & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (r >> 18));
    out += static_cast<char>(0x80 | ((r >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((r >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (r & 0x3F));
  }
}

// Go-style unquoting where '/' and '|' act like '"'.
std::optional<std::string> Unquote(std::string_view s) {
  if (s.size() < 2 || s.front() != s.back()) return std::nullopt;
  char quote = s.front();
  s = s.substr(1, s.size() - 2);
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == quote || c == '\n') return std::nullopt;
    if (c != '\\') {
      out += c;
      ++i;
      continue;
    }
    if (i + 1 >= s.size()) return std::nullopt;
    char e = s[i + 1];
    i += 2;
    switch (e) {
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'v':
        out += '\v';
        break;
      case '\\':
        out += '\\';
        break;
      case 'x':
      case 'u':
      case 'U': {
        size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        if (i + n > s.size()) return std::nullopt;
        uint32_t v = 0;
        for (size_t j = 0; j < n; ++j) {
          int h = HexVal(s[i + j]);
          if (h >= 16) return std::nullopt;
          v = (v << 4) | static_cast<uint32_t>(h);
        }
        i += n;
        if (e == 'x') {
          out += static_cast<char>(v);
        } else {
          if (v > 0x10FFFF) return std::nullopt;
          AppendUtf8(out, v);
        }
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          if (i + 2 > s.size()) return std::nullopt;
          uint32_t v = static_cast<uint32_t>(e - '0');
          for (size_t j = 0; j < 2; ++j) {
            char d = s[i + j];
            if (d < '0' || d > '7') return std::nullopt;
            v = (v << 3) | static_cast<uint32_t>(d - '0');
          }
          i += 2;
          if (v > 255) return std::nullopt;
          out += static_cast<char>(v);
        } else if ((e == '"' || e == '/' || e == '|' || e == '\'') && e == quote) {
          out += e;
        } else {
          return std::nullopt;
        }
    }
  }
  return out;
}

class Parser {
 public:
  explicit Parser(std::string_view in) : in_(in), sc_(in) {}

  Result<std::vector<Filter::Selector>> Parse() {
    std::vector<Filter::Selector> out;
    out.push_back(IPFLY_TRY(ParseSelector()));
    while (true) {
      if (sc_.AtEnd(true)) break;
      if (sc_.Peek(true) != ',') return Err(sc_.pos(), "unexpected input");
      sc_.Scan();  // ','
      out.push_back(IPFLY_TRY(ParseSelector()));
    }
    return out;
  }

 private:
  Error Err(size_t pos, std::string_view msg) const {
    std::string where;
    if (pos < in_.size()) {
      where = "[" + std::string(in_.substr(0, pos)) + " >|" + std::string(in_.substr(pos, 1)) +
              "|< " + std::string(in_.substr(pos + 1)) + "]";
    } else {
      where = "[" + std::string(in_) + "]";
    }
    return InvalidArgument("filters: parse error: " + where + ": " + std::string(msg));
  }

  Result<Filter::Selector> ParseSelector() {
    Filter::Selector sel;
    sel.fieldpath.push_back(IPFLY_TRY(ParseField()));
    while (sc_.Peek() == '.') {
      sc_.Scan();
      sel.fieldpath.push_back(IPFLY_TRY(ParseField()));
    }
    if (sc_.AtEnd(true) || sc_.Peek(true) == ',') {
      sel.op = Filter::Op::kPresent;
      return sel;
    }
    Token op = sc_.Scan();
    if (op.tok == Tok::kIllegal) return Err(op.pos, sc_.err());
    if (op.tok != Tok::kOperator) return Err(op.pos, "expected an operator (\"==\"|\"!=\"|\"~=\")");
    if (op.text == "==") {
      sel.op = Filter::Op::kEqual;
    } else if (op.text == "!=") {
      sel.op = Filter::Op::kNotEqual;
    } else if (op.text == "~=") {
      sel.op = Filter::Op::kMatches;
    } else {
      return Err(op.pos, "unsupported operator \"" + std::string(op.text) + "\"");
    }
    Token v = sc_.Scan();
    switch (v.tok) {
      case Tok::kValue:
      case Tok::kField:
        sel.value = std::string(v.text);
        break;
      case Tok::kQuoted:
        sel.value = IPFLY_TRY(UnquoteAt(v, sel.op == Filter::Op::kMatches));
        break;
      case Tok::kIllegal:
        return Err(v.pos, sc_.err());
      case Tok::kEof:
        return Err(v.pos, "unexpected end of input, expected value or quoted");
      default:
        return Err(v.pos, "expected value or quoted");
    }
    if (sel.op == Filter::Op::kMatches) {
      auto re = std::make_shared<re2::RE2>(sel.value, re2::RE2::Quiet);
      // Like containerd: an invalid pattern parses but never matches.
      if (re->ok()) sel.regex = std::move(re);
    }
    return sel;
  }

  Result<std::string> ParseField() {
    Token t = sc_.Scan();
    switch (t.tok) {
      case Tok::kField:
        return std::string(t.text);
      case Tok::kQuoted:
        return UnquoteAt(t, false);
      case Tok::kIllegal:
        return Err(t.pos, sc_.err());
      default:
        return Err(t.pos, "expected field or quoted");
    }
  }

  Result<std::string> UnquoteAt(const Token& t, bool allow_alt_quotes) {
    if (!allow_alt_quotes && t.text.front() != '"') {
      return Err(t.pos, "invalid quote encountered");
    }
    auto v = Unquote(t.text);
    if (!v) return Err(t.pos, "unquoting failed: quote syntax error");
    return *v;
  }

  std::string_view in_;
  Scanner sc_;
};

}  // namespace

Result<Filter> Filter::Parse(std::string_view s) {
  Filter f;
  if (s.empty()) return f;
  f.selectors_ = IPFLY_TRY(Parser(s).Parse());
  return f;
}

Result<std::vector<Filter>> Filter::ParseAll(const std::vector<std::string>& ss) {
  std::vector<Filter> out;
  for (const auto& s : ss) out.push_back(IPFLY_TRY(Parse(s)));
  return out;
}

bool Filter::MatchAny(const std::vector<Filter>& fs, const FieldLookup& lookup) {
  if (fs.empty()) return true;
  for (const auto& f : fs) {
    if (f.Match(lookup)) return true;
  }
  return false;
}

bool Filter::Match(const FieldLookup& lookup) const {
  for (const auto& sel : selectors_) {
    std::optional<std::string> v = lookup(sel.fieldpath);
    bool ok = false;
    switch (sel.op) {
      case Op::kPresent:
        ok = v.has_value();
        break;
      case Op::kEqual:
        ok = v.has_value() && *v == sel.value;
        break;
      case Op::kNotEqual:
        ok = v.value_or("") != sel.value;
        break;
      case Op::kMatches:
        ok = sel.regex != nullptr &&
             re2::RE2::PartialMatch(v.value_or(""), *static_cast<const re2::RE2*>(sel.regex.get()));
        break;
    }
    if (!ok) return false;
  }
  return true;
}

}  // namespace ipfly::snapshotter
