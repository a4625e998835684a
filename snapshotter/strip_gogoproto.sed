# Removes gogoproto from containerd's .proto files (protoc's C++ generator cannot use it).
/^import (weak )?"gogoproto\/gogo.proto";/d
/^[[:space:]]*option \(gogoproto\.[^)]*\)[^;]*;/d
s/ \[\(gogoproto\.[^]]*\]//g
