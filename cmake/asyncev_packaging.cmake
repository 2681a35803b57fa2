# Binary packages with CPack. From a build directory:
#   cpack -G DEB     libasyncev-dev_<version>_<arch>.deb, everything `cmake --install` installs
#                    (shared library with its SONAME links, static library, header, asyncev.pc,
#                    the CMake package), under /usr
#   cpack -G TGZ     the same files as a tarball
# One package holds both the run-time library and the development files: this is a library you
# build programs against, and one .deb is simpler to install than a split pair.
#
# The library directory is the configured CMAKE_INSTALL_LIBDIR below /usr: lib/<multiarch> when
# CMake was configured with the prefix /usr, or lib when it was set so. Both are searched by the
# dynamic linker, pkg-config and find_package() without any extra path. asyncev.pc is written
# at install time, so it names /usr here whatever prefix the build directory was configured for.

set(CPACK_PACKAGE_NAME "libasyncev-dev")
set(CPACK_PACKAGE_VENDOR "libasyncev authors")
set(CPACK_PACKAGE_CONTACT "libasyncev authors")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_DESCRIPTION
    "libasyncev is a reactor event loop in C11 with io, timer, periodic, signal, child, stat, \
idle, prepare/check, async, fork, cleanup and embed watchers over epoll, kqueue or poll. This \
package holds the shared and static libraries, the header, pkg-config and CMake files.")
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# CPack installs with CMAKE_INSTALL_PREFIX set to this and the files staged under its own
# directory, so the install-time asyncev.pc records /usr. (CPACK_SET_DESTDIR would keep the
# configured prefix instead: leave it off.)
set(CPACK_STRIP_FILES OFF)

if(NOT CPACK_GENERATOR)
    find_program(AEV_DPKG NAMES dpkg)
    if(AEV_DPKG)
        set(CPACK_GENERATOR DEB)
    else()
        set(CPACK_GENERATOR TGZ)
    endif()
endif()

set(CPACK_DEBIAN_PACKAGE_NAME "libasyncev-dev")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "libasyncev authors")
set(CPACK_DEBIAN_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Depends is computed from the libraries the .so really uses (libc6 (>= x)); without
# dpkg-shlibdeps, the C library is the only one it links to.
find_program(AEV_DPKG_SHLIBDEPS NAMES dpkg-shlibdeps)
if(AEV_DPKG_SHLIBDEPS)
    set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
    set(CPACK_DEBIAN_PACKAGE_DEPENDS "libc6")
endif()
# A shlibs file for packages built against this one, and the ldconfig trigger that refreshes the
# dynamic linker's cache when the package is installed or removed.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY "=")

set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build/" "/build-[^/]*/")

include(CPack)
