#include "fileIo.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

namespace deformrt
{
namespace detail
{

Expected<std::string> readFile(std::string const& path)
{
    struct stat info{};
    if (::stat(path.c_str(), &info) != 0)
    {
        return Status::error("cannot open " + path + ": " + std::strerror(errno));
    }
    if (!S_ISREG(info.st_mode))
    {
        return Status::error(path + " is not a regular file");
    }
    std::ifstream file(path, std::ios::binary);
    if (!file)
    {
        return Status::error("cannot open " + path + ": " + std::strerror(errno));
    }
    // Read in one piece: engines are hundreds of megabytes, too many for a character-by-character read.
    std::string bytes;
    try
    {
        bytes.resize(static_cast<std::size_t>(info.st_size));
    }
    catch (std::exception const&)
    {
        return Status::error("not enough memory to read " + path + " (" + std::to_string(info.st_size) + " bytes)");
    }
    if (!file.read(bytes.data(), static_cast<std::streamsize>(bytes.size())) || file.peek() != EOF)
    {
        return Status::error("cannot read " + path + " (it changed while being read?)");
    }
    return Expected<std::string>(std::move(bytes));
}

Status writeFileAtomic(std::string const& path, std::string const& bytes)
{
    std::string const temporary = path + ".tmp." + std::to_string(::getpid());
    {
        std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
        if (!file)
        {
            return Status::error("cannot write " + temporary + ": " + std::strerror(errno));
        }
        file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        file.flush();
        if (!file)
        {
            file.close();
            std::remove(temporary.c_str());
            return Status::error("cannot write " + temporary + " (disk full?)");
        }
    }
    if (std::rename(temporary.c_str(), path.c_str()) != 0)
    {
        std::string const reason = std::strerror(errno);
        std::remove(temporary.c_str());
        return Status::error("cannot rename " + temporary + " to " + path + ": " + reason);
    }
    return Status();
}

} // namespace detail
} // namespace deformrt
