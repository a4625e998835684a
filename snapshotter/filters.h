// containerd's filter language (the `filters` package), as used by List/Walk:
//
//   selectors := selector ("," selector)*          all selectors must match
//   selector  := fieldpath [operator value]        no operator = "field is present"
//   fieldpath := field ("." field)*
//   field     := quoted | [A-Za-z0-9_]+
//   operator  := "==" | "!=" | "~="                "~=" is an (unanchored) RE2 regex search
//   value     := quoted | run of non-space, non-comma characters
//   quoted    := Go string syntax with " (values of "~=" may also use / or | as the quote)
//
// Several filter strings combine with OR (ListSnapshotsRequest.filters). Parsing is strict: a
// malformed filter is kInvalidArgument with the position, never a silent "match all".
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/result.h"

namespace ipfly::snapshotter {

// Looks a field path up on the object being filtered: the value, or nullopt if it is absent.
using FieldLookup = std::function<std::optional<std::string>(const std::vector<std::string>&)>;

class Filter {
 public:
  enum class Op { kPresent, kEqual, kNotEqual, kMatches };
  struct Selector {
    std::vector<std::string> fieldpath;
    Op op = Op::kPresent;
    std::string value;
    std::shared_ptr<const void> regex;  // compiled RE2 for kMatches (opaque here)
  };

  // Parses one filter string ("" = match everything).
  static Result<Filter> Parse(std::string_view s);
  // Parses several strings, OR-ed (none = match everything).
  static Result<std::vector<Filter>> ParseAll(const std::vector<std::string>& ss);
  static bool MatchAny(const std::vector<Filter>& fs, const FieldLookup& lookup);

  bool Match(const FieldLookup& lookup) const;
  const std::vector<Selector>& selectors() const { return selectors_; }

 private:
  std::vector<Selector> selectors_;  // AND-ed; empty = always
};

}  // namespace ipfly::snapshotter
