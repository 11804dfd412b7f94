#!/usr/bin/env bash
# The C++ compiler for building mmcv's ops (tools/setup_env.sh sets CXX to this script): the same compiler, with
# the header that most op sources include first (pytorch_cpp_helper.hpp, which pulls in all of ATen) parsed once
# into a precompiled header, with the exact flags of the first compile that asks for it. Each later compile then
# loads it instead of parsing ATen again (about 2 s a source instead of 9 on one core). gcc checks a precompiled
# header against each compile's flags and reads the text header where they differ, so the objects are the same.
set -euo pipefail
cxx=${MMVANILLA_CXX:-c++}
args=("$@")
src="" common=""
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    *.cpp) src=${args[i]} ;;
    -I*/ops/csrc/common) common=${args[i]#-I} ;;
  esac
done
header="$common/pytorch_cpp_helper.hpp"
if [[ $src == *.cpp && -n $common && -f $header ]]; then
  (
    flock 9
    if [[ ! -f $header.gch ]]; then
      # The compile's own flags, less its source, object and dependency file.
      flags=()
      for ((i = 0; i < ${#args[@]}; i++)); do
        case ${args[i]} in
          -o | -MF) i=$((i + 1)) ;;
          -c | -MMD | "$src") ;;
          *) flags+=("${args[i]}") ;;
        esac
      done
      "$cxx" "${flags[@]}" -x c++-header "$header" -o "$header.gch.partial" && mv "$header.gch.partial" "$header.gch"
    fi
  ) 9>"$header.lock" || rm -f "$header.gch.partial"
fi
exec "$cxx" "$@"
