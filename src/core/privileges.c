/* privileges: see privileges.h. */
#include <config.h> /* the build's (_GNU_SOURCE), not core/config.h beside this file */

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/log.h"
#include "core/privileges.h"

static bool privileges_caps_clear(char *err, size_t errlen)
{
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	/* Nothing held (the usual case under systemd with User=): done, and
	   no capset() that a SystemCallFilter= might refuse. */
	if (syscall(SYS_capget, &hdr, data) == 0 && !data[0].effective && !data[0].permitted &&
	    !data[0].inheritable && !data[1].effective && !data[1].permitted &&
	    !data[1].inheritable)
		return true;
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) < 0) {
		snprintf(err, errlen, "cannot drop capabilities: %s", strerror(errno));
		return false;
	}
	if (syscall(SYS_capget, &hdr, data) < 0 || data[0].effective || data[0].permitted ||
	    data[1].effective || data[1].permitted) {
		snprintf(err, errlen, "capabilities are still held after dropping them");
		return false;
	}
	return true;
}

bool privileges_drop(const struct config *cfg, char *err, size_t errlen)
{
	if (cfg->user == NULL) {
		if (geteuid() == 0) {
			log_warn("running as root: set \"user = submitd\" (or User= in the systemd "
				 "unit)");
			return true;
		}
		return privileges_caps_clear(err, errlen);
	}
	errno = 0;
	struct passwd *pw = getpwnam(cfg->user);
	if (pw == NULL) {
		snprintf(err, errlen, "user %s: %s", cfg->user,
			 errno ? strerror(errno) : "no such user");
		return false;
	}
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	if (geteuid() != 0) {
		if (geteuid() != uid) {
			snprintf(err, errlen,
				 "user = %s: started as uid %ld, cannot switch without root",
				 cfg->user, (long)geteuid());
			return false;
		}
		return privileges_caps_clear(err, errlen);
	}
	if (initgroups(pw->pw_name, gid) < 0 || setresgid(gid, gid, gid) < 0 ||
	    setresuid(uid, uid, uid) < 0) {
		snprintf(err, errlen, "cannot become %s: %s", cfg->user, strerror(errno));
		return false;
	}
	uid_t ru, eu, su;
	gid_t rg, eg, sg;
	if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 || ru != uid ||
	    eu != uid || su != uid || rg != gid || eg != gid || sg != gid) {
		snprintf(err, errlen, "user %s: IDs did not all change", cfg->user);
		return false;
	}
	if (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0 || setegid(0) == 0)) {
		snprintf(err, errlen, "user %s: root could be regained after dropping it",
			 cfg->user);
		return false;
	}
	/* Never regain anything through exec either (we exec nothing). */
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	if (uid == 0)
		return true;
	return privileges_caps_clear(err, errlen);
}
