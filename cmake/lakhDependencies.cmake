# How lakh finds its dependencies. One place, used both by lakh's own CMakeLists.txt and by
# the installed lakhConfig.cmake, so that a consumer resolves them exactly as the build did.
#
# Debian 12 ships libpqxx, hiredis and cnats with pkg-config files; libpqxx has no CMake
# config, hiredis's needs a version and makes no target, and cnats's points at a static
# library that is not shipped. Each finder therefore tries pkg-config, which works for all
# three, and creates the imported target PkgConfig::LAKH_<NAME>.
#
# Each lakh_find_<x>([REQUIRED]) leaves the target defined when found; with REQUIRED a
# missing dependency stops configuration with a message naming the Debian package.

include_guard(GLOBAL)

macro(lakh_find_threads)
  if(NOT TARGET Threads::Threads)
    set(THREADS_PREFER_PTHREAD_FLAG ON)
    find_package(Threads ${ARGN})
  endif()
endmacro()

function(_lakh_pkg prefix module debian_pkg)
  if(TARGET PkgConfig::${prefix})
    return()
  endif()
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    # GLOBAL so that the target is visible wherever lakh's exported targets are used.
    pkg_check_modules(${prefix} QUIET IMPORTED_TARGET GLOBAL ${module})
  endif()
  if(NOT TARGET PkgConfig::${prefix} AND "REQUIRED" IN_LIST ARGN)
    message(FATAL_ERROR "lakh: pkg-config module '${module}' not found "
                        "(install the Debian package ${debian_pkg} and pkg-config; "
                        "lakh's scripts/setup does this)")
  endif()
endfunction()

# libpq too: lakh/pg/conninfo.hpp calls it directly, and libpqxx's .pc file does not name it.
function(lakh_find_pqxx)
  _lakh_pkg(LAKH_PQXX "libpqxx;libpq" libpqxx-dev ${ARGN})
endfunction()

function(lakh_find_hiredis)
  _lakh_pkg(LAKH_HIREDIS hiredis libhiredis-dev ${ARGN})
endfunction()

function(lakh_find_nats)
  _lakh_pkg(LAKH_NATS libnats libnats-dev ${ARGN})
endfunction()
