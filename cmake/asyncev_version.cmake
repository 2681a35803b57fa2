# The version is written twice: project(asyncev VERSION ...) in CMakeLists.txt, which names the
# shared library, its SONAME, asyncev.pc, the CMake package and the Debian package, and the
# AEV_VERSION_MAJOR/MINOR/PATCH macros of include/asyncev.h, which aev_version() returns. They
# must not drift apart.
#
# Included from CMakeLists.txt: defines aev_header_version() and aev_check_version(), and the
# configure step calls the latter, so a mismatch stops CMake with FATAL_ERROR.
# As a script, it is the `version` test, which re-reads the header after configuration:
#   cmake -DHEADER=include/asyncev.h -DEXPECTED=0.3.1 -P cmake/asyncev_version.cmake

# Sets out_var to "MAJOR.MINOR.PATCH" as the header defines it.
function(aev_header_version header out_var)
    if(NOT EXISTS "${header}")
        message(FATAL_ERROR "asyncev: cannot read ${header}")
    endif()
    file(STRINGS "${header}" lines REGEX "^#[ \t]*define[ \t]+AEV_VERSION_(MAJOR|MINOR|PATCH)[ \t]")
    set(parts "")
    foreach(part MAJOR MINOR PATCH)
        set(value "")
        foreach(line IN LISTS lines)
            if(line MATCHES "^#[ \t]*define[ \t]+AEV_VERSION_${part}[ \t]+([0-9]+)[ \t]*$")
                if(NOT value STREQUAL "")
                    message(FATAL_ERROR
                        "asyncev: AEV_VERSION_${part} is defined twice in ${header}")
                endif()
                set(value ${CMAKE_MATCH_1})
            endif()
        endforeach()
        if(value STREQUAL "")
            message(FATAL_ERROR
                "asyncev: ${header} has no '#define AEV_VERSION_${part} <number>' line")
        endif()
        list(APPEND parts ${value})
    endforeach()
    list(JOIN parts "." version)
    set(${out_var} "${version}" PARENT_SCOPE)
endfunction()

# Stops with FATAL_ERROR unless the header's version is `expected`.
function(aev_check_version header expected)
    aev_header_version("${header}" header_version)
    if(NOT header_version VERSION_EQUAL expected OR NOT header_version STREQUAL expected)
        message(FATAL_ERROR
            "asyncev: version mismatch: project(asyncev VERSION ${expected}) in CMakeLists.txt, "
            "but ${header} defines ${header_version}. Change both together.")
    endif()
endfunction()

if(CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
    if(NOT DEFINED HEADER OR NOT DEFINED EXPECTED)
        message(FATAL_ERROR
            "usage: cmake -DHEADER=asyncev.h -DEXPECTED=X.Y.Z -P ${CMAKE_CURRENT_LIST_FILE}")
    endif()
    aev_check_version("${HEADER}" "${EXPECTED}")
    message(STATUS "asyncev: ${HEADER} and the project agree on version ${EXPECTED}")
endif()
