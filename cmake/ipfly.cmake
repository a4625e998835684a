# Project-wide compile flags and helpers.
add_library(ipfly_flags INTERFACE)
target_compile_options(ipfly_flags INTERFACE -Wall -Wextra -Wshadow -Wnon-virtual-dtor
                       -Wno-missing-field-initializers)
if(IPFLY_WERROR)
  target_compile_options(ipfly_flags INTERFACE -Werror)
endif()
if(IPFLY_SANITIZE)
  target_compile_options(ipfly_flags INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
                         -fno-sanitize-recover=undefined)
  target_link_options(ipfly_flags INTERFACE -fsanitize=address,undefined)
endif()
if(IPFLY_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "IPFLY_FUZZ needs clang (CC=clang CXX=clang++)")
  endif()
  target_compile_options(ipfly_flags INTERFACE -fsanitize=fuzzer-no-link,address,undefined
                         -fno-omit-frame-pointer)
  target_link_options(ipfly_flags INTERFACE -fsanitize=address,undefined)
endif()
target_include_directories(ipfly_flags INTERFACE ${PROJECT_SOURCE_DIR})

# ipfly_test(NAME SOURCES... LIBS ...): one gtest binary per module test folder.
function(ipfly_test name)
  cmake_parse_arguments(T "WHOLE" "" "SOURCES;LIBS" ${ARGN})
  if(NOT T_SOURCES)
    return()
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main GTest::gmock ipfly_flags)
  target_compile_definitions(${name} PRIVATE IPFLY_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  if(T_WHOLE)
    # One ctest entry for the whole binary: its global environment (e.g. real IPFS nodes) is
    # started once instead of once per test case.
    add_test(NAME ${name} COMMAND ${name})
    set_tests_properties(${name} PROPERTIES TIMEOUT 1200)
  else()
    include(GoogleTest)
    gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 300)
  endif()
endfunction()
