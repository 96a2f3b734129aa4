# How lakh finds its dependencies. One place, used both by lakh's own CMakeLists.txt and by
# the installed lakhConfig.cmake, so that a consumer resolves them exactly as the build did.
#
# Debian 12 ships libpqxx, hiredis and cnats with pkg-config files; libpqxx has no CMake
# config, hiredis's needs a version and makes no target, and cnats's points at a static
# library that is not shipped. Each adapter is therefore found with pkg-config, which works
# for all three, as the imported target PkgConfig::<prefix>.
#
# lakh_find_adapter(<pg|redis|nats> [REQUIRED]) leaves the target defined when found; with
# REQUIRED a missing dependency stops configuration with a message naming the pkg-config
# modules missing and the Debian package that provides them (lakh_adapter_missing).

include_guard(GLOBAL)

macro(lakh_find_threads)
  if(NOT TARGET Threads::Threads)
    set(THREADS_PREFER_PTHREAD_FLAG ON)
    find_package(Threads ${ARGN})
  endif()
endmacro()

# The adapters: for each, the pkg-config modules (libpq too for pg: lakh/pg/conninfo.hpp calls
# it directly, and libpqxx's .pc file does not name it), the prefix of the imported target
# they make, and the Debian package that provides them.
set(lakh_adapters pg redis nats)
set(lakh_pg_modules libpqxx libpq)
set(lakh_pg_prefix LAKH_PQXX)
set(lakh_pg_debian libpqxx-dev)
set(lakh_redis_modules hiredis)
set(lakh_redis_prefix LAKH_HIREDIS)
set(lakh_redis_debian libhiredis-dev)
set(lakh_nats_modules libnats)
set(lakh_nats_prefix LAKH_NATS)
set(lakh_nats_debian libnats-dev)

function(lakh_find_adapter name)
  set(prefix ${lakh_${name}_prefix})
  if(TARGET PkgConfig::${prefix})
    return()
  endif()
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    # GLOBAL so that the target is visible wherever lakh's exported targets are used.
    pkg_check_modules(${prefix} QUIET IMPORTED_TARGET GLOBAL ${lakh_${name}_modules})
  endif()
  if(NOT TARGET PkgConfig::${prefix} AND "REQUIRED" IN_LIST ARGN)
    lakh_adapter_missing(missing ${name})
    message(FATAL_ERROR "lakh: lakh::${name} was asked for, but ${missing}")
  endif()
endfunction()

# lakh_adapter_missing(<out> <adapter>): what is missing for the adapter, in words: the
# pkg-config modules that do not resolve (or pkg-config itself) and the Debian package to install.
function(lakh_adapter_missing out name)
  find_package(PkgConfig QUIET)
  if(NOT PKG_CONFIG_FOUND)
    set(${out}
        "pkg-config is not installed (install the Debian packages pkg-config and ${lakh_${name}_debian})"
        PARENT_SCOPE)
    return()
  endif()
  set(names "")
  foreach(m IN LISTS lakh_${name}_modules)
    pkg_check_modules(_lakh_probe QUIET ${m})
    if(NOT _lakh_probe_FOUND)
      list(APPEND names ${m})
    endif()
  endforeach()
  list(JOIN names ", " names)
  set(${out} "pkg-config cannot find ${names} (install the Debian package ${lakh_${name}_debian})"
      PARENT_SCOPE)
endfunction()
