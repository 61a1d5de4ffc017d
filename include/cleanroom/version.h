/* The version of libcleanroom and the cleanroom command. */
#ifndef CLEANROOM_VERSION_H
#define CLEANROOM_VERSION_H

#define CLEANROOM_VERSION_STRING "0.1.0"

#endif
