# Install-time part of packaging/CMakeLists.txt: writes the two snapbuildd.service units and
# installs the default configuration, with the paths of the prefix this installation uses
# (CMAKE_INSTALL_PREFIX as cmake --install or CPack sets it, DESTDIR honoured by
# file(INSTALL)). The configuration directory follows GNUInstallDirs: /etc for the /usr
# prefix, <prefix>/etc otherwise.

function(snapbuild_full_dir out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

snapbuild_full_dir(SBINDIR "${SNAPBUILD_SBINDIR}")
snapbuild_full_dir(DATADIR "${SNAPBUILD_DATADIR}")
if(IS_ABSOLUTE "${SNAPBUILD_SYSCONFDIR}")
  set(SYSCONFDIR "${SNAPBUILD_SYSCONFDIR}")
elseif(CMAKE_INSTALL_PREFIX STREQUAL "/usr" OR CMAKE_INSTALL_PREFIX STREQUAL "/")
  set(SYSCONFDIR "/${SNAPBUILD_SYSCONFDIR}")
else()
  set(SYSCONFDIR "${CMAKE_INSTALL_PREFIX}/${SNAPBUILD_SYSCONFDIR}")
endif()

# One staging directory per destination, so that installations running side by side
# (cpack into several directories, cmake --install) never write each other's units.
string(MD5 destination_hash "$ENV{DESTDIR}|${CMAKE_INSTALL_PREFIX}")
set(staging "${SNAPBUILD_PACKAGING_BINARY_DIR}/units/${destination_hash}")
configure_file("${SNAPBUILD_PACKAGING_SOURCE_DIR}/systemd/snapbuildd.service.in"
               "${staging}/system/snapbuildd.service" @ONLY)
configure_file("${SNAPBUILD_PACKAGING_SOURCE_DIR}/systemd/user/snapbuildd.service.in"
               "${staging}/user/snapbuildd.service" @ONLY)

snapbuild_full_dir(systemd_dir "${SNAPBUILD_SYSTEMD_DIR}")
file(INSTALL "${staging}/system/snapbuildd.service" DESTINATION "${systemd_dir}/system"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(INSTALL "${staging}/user/snapbuildd.service" DESTINATION "${systemd_dir}/user"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(INSTALL "${SNAPBUILD_PACKAGING_SOURCE_DIR}/snapbuildd.conf"
     DESTINATION "${SYSCONFDIR}/snapbuild"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
